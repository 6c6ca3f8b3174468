'use strict';

// serverless-immortal: `immortal: true` on a function attaches it to immortal's
// overflow stack, which relaunches its timed-out invocations in ECS Fargate.
// See README.md for what it adds and why.

const settings = require('./lib/settings');
const attach = require('./lib/attach');

const SHARED_ROLE = 'IamRoleLambdaExecution';

class ServerlessImmortal {
  constructor(serverless, cliOptions, utils = {}) {
    this.serverless = serverless;
    this.provider = serverless.getProvider('aws');
    // The framework hands external plugins their writers; the fallbacks keep the plugin
    // usable where it is constructed by hand.
    this.log = utils.log || { warning: (text) => console.warn(text), notice: (text) => console.log(text) };
    this.writeText = utils.writeText || ((text) => console.log(text));
    this.attached = new Map();

    const schemas = serverless.configSchemaHandler;
    schemas.defineFunctionProperties('aws', { properties: { immortal: settings.schema.function } });
    schemas.defineCustomProperties({ properties: { immortal: settings.schema.custom } });

    this.commands = {
      immortal: {
        usage: 'Lists the functions attached to the immortal overflow stack',
        lifecycleEvents: ['list'],
      },
    };
    this.hooks = {
      // Before any command: check the settings, and give the attached functions what
      // the framework compiles itself (one attempt, the destination, the tag).
      'initialize': () => this.configure(),
      // Once the framework compiled functions, roles and events and merged the
      // service's own resources (its roles) into the template: what it has no setting
      // for (trust, tags of roles, dead-letter queues).
      'after:aws:package:finalize:mergeCustomProviderResources': () => this.compile(),
      'immortal:list': () => this.list(),
    };
  }

  fail(message) {
    throw new this.serverless.classes.Error(`serverless-immortal: ${message}`, 'SERVERLESS_IMMORTAL_SETTINGS');
  }

  configure() {
    const service = this.serverless.service;
    const fail = (message) => this.fail(message);
    const defaults = settings.defaults({ value: (service.custom || {}).immortal, fail });
    const stage = this.provider.getStage();
    this.attached = new Map();
    for (const name of service.getAllFunctions()) {
      const fn = service.getFunction(name);
      const chosen = settings.resolve({ name, value: fn.immortal, defaults, stage, fail });
      if (!chosen) continue;
      this.attached.set(name, chosen);
      this.prepare(name, fn, chosen);
    }
  }

  prepare(name, fn, chosen) {
    const at = `functions.${name}`;
    if (fn.maximumRetryAttempts != null && fn.maximumRetryAttempts !== 0) {
      this.fail(
        `${at}.maximumRetryAttempts is ${fn.maximumRetryAttempts}, but an attached function gets one attempt in Lambda (the overflow runs it again): remove the setting or set it to 0`
      );
    }
    fn.maximumRetryAttempts = 0;
    fn.tags = { ...(fn.tags || {}), [attach.ENABLED_TAG]: 'true' };
    if (chosen.relaunch) fn.tags[attach.RELAUNCH_TAG] = chosen.relaunch.join('+');
    if (fn.image) {
      this.log.warning(
        `serverless-immortal: ${at} is a container image function; the runner serves zip functions only, so its overflow will be refused`
      );
    }
    if (chosen.via === 'destination') {
      if (fn.destinations && fn.destinations.onFailure) {
        this.fail(
          `${at}.destinations.onFailure is set, but immortal sends the function's failures to the overflow stack's queue: remove it, or use immortal: { via: deadLetter } to keep your own onFailure destination`
        );
      }
      fn.destinations = {
        ...(fn.destinations || {}),
        onFailure: { type: 'sqs', arn: attach.imported(chosen.stack, attach.EXPORTS.overflowQueue) },
      };
    } else if (fn.onError) {
      this.fail(
        `${at}.onError is set, but a function has one dead-letter queue and immortal: { via: deadLetter } gives it the overflow's: remove onError, or use via: destination`
      );
    }
  }

  // The role a function runs as: the framework's shared role, a role resource of this
  // service (`role: Name` or `!GetAtt Name.Arn`), or one the plugin cannot change.
  roleOf(fn, resources) {
    const id = this.provider.resolveFunctionIamRoleResourceName(fn);
    const resource = id && resources[id];
    if (resource && resource.Type === 'AWS::IAM::Role') return { id, resource };
    return { id: null, shown: JSON.stringify(this.provider.getCustomExecutionRole(fn) || id) };
  }

  compile() {
    const service = this.serverless.service;
    const naming = this.provider.naming;
    const resources = service.provider.compiledCloudFormationTemplate.Resources;
    for (const [name, chosen] of this.attached) {
      const fn = service.getFunction(name);
      const functionId = naming.getLambdaLogicalId(name);
      const queueId = `${naming.getNormalizedFunctionName(name)}ImmortalDlq`;
      let queueArn = attach.imported(chosen.stack, attach.EXPORTS.overflowQueue);
      if (chosen.via === 'deadLetter') {
        Object.assign(
          resources,
          attach.deadLetterResources({ queueId, functionName: fn.name, stack: chosen.stack })
        );
        queueArn = { 'Fn::GetAtt': [queueId, 'Arn'] };
        resources[functionId].Properties.DeadLetterConfig = { TargetArn: queueArn };
      }
      const role = this.roleOf(fn, resources);
      const trusted = role.id && attach.trust(role.resource, attach.trustStatement(chosen.stack));
      if (trusted && attach.tag(role.resource, attach.ENABLED_TAG, 'true')) {
        attach.allowSend(role.resource, role.id, queueArn);
        continue;
      }
      const shown = role.id ? `its role ${role.id}, whose trust policy or tags are not plain lists,` : `the role ${role.shown}, which this service does not define,`;
      this.log.warning(
        [
          `serverless-immortal: functions.${name} runs as ${shown} so the plugin cannot change it. Until you add these, its overflow fails (the runner cannot assume the role) or is lost (Lambda cannot send to the queue):`,
          ...attach.manualStatements({ stack: chosen.stack, via: chosen.via, queueId }).map((line) => `  - to ${line}`),
        ].join('\n')
      );
    }
  }

  list() {
    const service = this.serverless.service;
    const resources = (service.resources && service.resources.Resources) || {};
    const names = service.getAllFunctions();
    const lines = [`immortal: ${this.attached.size} of ${names.length} functions attached`];
    for (const name of names) {
      const chosen = this.attached.get(name);
      if (!chosen) {
        lines.push(`  ${name}: not attached`);
        continue;
      }
      const fn = service.getFunction(name);
      const id = this.provider.resolveFunctionIamRoleResourceName(fn);
      const role =
        id === SHARED_ROLE
          ? `the service's shared role (${SHARED_ROLE})`
          : id && resources[id]
            ? `its role ${id}`
            : `${JSON.stringify(this.provider.getCustomExecutionRole(fn))}, outside this service: add the statements \`serverless package\` prints`;
      lines.push(
        `  ${name} (${fn.name}): via ${chosen.via} to stack ${chosen.stack}, relaunch ${
          chosen.relaunch ? `${chosen.relaunch.join(',')} (tag ${attach.RELAUNCH_TAG}, over the stack's setting)` : "as the stack's forwarder says"
        }, runs as ${role}`
      );
    }
    this.writeText(lines.join('\n'));
  }
}

module.exports = ServerlessImmortal;
