'use strict';

// What attaching a function adds to the compiled CloudFormation template. Everything
// that comes from the overflow stack is an import of one of its exports,
// `<stack>-<Name>`, so attaching a function never edits that stack.

// The overflow stack's exports (serverless.yml in the immortal repository).
const EXPORTS = {
  // The shared queue for destinations.onFailure records (they name their function).
  overflowQueue: 'OverflowQueueArn',
  // The runner's ECS task role: it assumes the function's role to run it as itself.
  runnerRole: 'RunnerTaskRoleArn',
  // Where a dead-letter queue's messages go after the forwarder gave up on them.
  parkingQueue: 'ParkingQueueArn',
  // The forwarder: reads the queues, starts the runner's tasks.
  forwarder: 'ForwarderArn',
  // Envelopes and outcome records too large for their queue (not imported here).
  payloadBucket: 'PayloadBucket',
};

// The tag that lets the runner read the function and assume its role, and the
// forwarder read its dead-letter queue (the overflow stack's IAM is conditioned on it).
const ENABLED_TAG = 'immortal:enabled';
// A dead-letter queue's function (a DLQ message does not name it).
const FUNCTION_TAG = 'immortal:function';
// The function's own relaunch setting, read by the forwarder and the drain workers.
const RELAUNCH_TAG = 'immortal:relaunch';

const imported = (stack, name) => ({ 'Fn::ImportValue': `${stack}-${name}` });

// The overflow stack's mode switch, an SSM parameter (`true`: one task per message;
// `false`: drain mode's workers read the queue), resolved when the service deploys.
// Not an export: the overflow stack could not switch modes while a service imports it.
const perMessageTasks = (stack) => `{{resolve:ssm:/immortal/${stack}/per-message-tasks}}`;

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const list = (value) => (Array.isArray(value) ? value : [value]);

const trustStatement = (stack) => ({
  Effect: 'Allow',
  Principal: { AWS: imported(stack, EXPORTS.runnerRole) },
  Action: 'sts:AssumeRole',
});

const sendStatement = (queueArn) => ({
  Effect: 'Allow',
  Action: 'sqs:SendMessage',
  Resource: queueArn,
});

// Adds `statement` to the role's trust policy unless it is there. False when the trust
// policy is not a document the plugin can read (e.g. built with Fn::Sub).
const trust = (role, statement) => {
  const document = role.Properties.AssumeRolePolicyDocument;
  if (!document || !Array.isArray(document.Statement)) return false;
  if (!document.Statement.some((existing) => same(existing, statement))) {
    document.Statement.push(statement);
  }
  return true;
};

// Tags a resource whose Tags are a list of {Key, Value} (roles, queues).
const tag = (resource, key, value) => {
  const properties = resource.Properties;
  if (properties.Tags === undefined) properties.Tags = [];
  if (!Array.isArray(properties.Tags)) return false;
  const existing = properties.Tags.find((t) => t.Key === key);
  if (existing) existing.Value = value;
  else properties.Tags.push({ Key: key, Value: value });
  return true;
};

// Whether one of the role's inline policies already allows `action` on `resource`
// (the framework adds sqs:SendMessage for destinations on its shared role itself).
const allows = (role, action, resource) =>
  (role.Properties.Policies || []).some((policy) =>
    list((policy.PolicyDocument || {}).Statement || []).some(
      (statement) =>
        statement.Effect === 'Allow' &&
        list(statement.Action).includes(action) &&
        list(statement.Resource).some((r) => same(r, resource))
    )
  );

// Gives the role sqs:SendMessage on the queue: in the framework's shared role, next to
// its own statements; in a role of the service's own, in a policy named `immortal`.
const allowSend = (role, roleId, queueArn) => {
  if (allows(role, 'sqs:SendMessage', queueArn)) return;
  const properties = role.Properties;
  if (properties.Policies === undefined) properties.Policies = [];
  let policy =
    roleId === 'IamRoleLambdaExecution'
      ? properties.Policies[0]
      : properties.Policies.find((p) => p.PolicyName === 'immortal');
  if (!policy) {
    policy = {
      PolicyName: 'immortal',
      PolicyDocument: { Version: '2012-10-17', Statement: [] },
    };
    properties.Policies.push(policy);
  }
  policy.PolicyDocument.Statement.push(sendStatement(queueArn));
};

// `via: deadLetter`: a queue of the function's own, tagged with its name, whose
// messages the forwarder reads (an event source mapping onto the imported forwarder;
// it may read the queue because of its `immortal:enabled` tag), parked in the overflow
// stack's parking queue after five receives.
const deadLetterResources = ({ queueId, functionName, stack }) => ({
  [queueId]: {
    Type: 'AWS::SQS::Queue',
    Properties: {
      // Six times the forwarder's 60-second timeout, as AWS recommends for SQS triggers.
      VisibilityTimeout: 360,
      MessageRetentionPeriod: 1209600,
      RedrivePolicy: {
        deadLetterTargetArn: imported(stack, EXPORTS.parkingQueue),
        maxReceiveCount: 5,
      },
      Tags: [
        { Key: FUNCTION_TAG, Value: functionName },
        { Key: ENABLED_TAG, Value: 'true' },
      ],
    },
  },
  [`${queueId}Trigger`]: {
    Type: 'AWS::Lambda::EventSourceMapping',
    Properties: {
      EventSourceArn: { 'Fn::GetAtt': [queueId, 'Arn'] },
      FunctionName: imported(stack, EXPORTS.forwarder),
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      // Off in drain mode: the drain workers read the queue (found by its tags).
      Enabled: perMessageTasks(stack),
    },
  },
});

// The statements for a role the plugin cannot change, as a person would add them.
const manualStatements = ({ stack, via, queueId }) => {
  const exportValue = (name) =>
    `<the value of the export ${stack}-${name}: aws cloudformation list-exports --query "Exports[?Name=='${stack}-${name}'].Value" --output text>`;
  const queue =
    via === 'deadLetter' ? `<the ARN of ${queueId}, this stack's queue>` : exportValue(EXPORTS.overflowQueue);
  return [
    `its trust policy: ${JSON.stringify({ Effect: 'Allow', Principal: { AWS: exportValue(EXPORTS.runnerRole) }, Action: 'sts:AssumeRole' })}`,
    `its permissions: ${JSON.stringify(sendStatement(queue))}`,
    `the tag ${ENABLED_TAG}=true (the runner may assume only roles tagged so)`,
  ];
};

module.exports = {
  EXPORTS,
  ENABLED_TAG,
  FUNCTION_TAG,
  RELAUNCH_TAG,
  imported,
  perMessageTasks,
  trustStatement,
  trust,
  tag,
  allowSend,
  deadLetterResources,
  manualStatements,
};
