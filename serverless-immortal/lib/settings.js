'use strict';

// The plugin's settings: one JSON schema, given to the framework (so `immortal` is a
// known key and `serverless print`/editors see it) and checked here against the same
// schema. The framework only warns about schema violations unless the service says
// `configValidationMode: error`; a typo in `immortal` would then silently attach a
// function differently than meant, so the plugin fails packaging on its own key.

// The failure classes the forwarder relaunches (IMMORTAL_RELAUNCH).
const FAILURE_CLASSES = ['timeout', 'overflow', 'error', 'expired', 'all'];
const ROUTES = ['destination', 'deadLetter'];

const classList = `^(${FAILURE_CLASSES.join('|')})(,(${FAILURE_CLASSES.join('|')}))*$`;

const options = {
  type: 'object',
  properties: {
    // The overflow stack's CloudFormation name (its exports are `<stack>-<Name>`).
    stack: {
      type: 'string',
      pattern: '^[A-Za-z][A-Za-z0-9-]*$',
      description: 'a CloudFormation stack name',
    },
    relaunch: {
      anyOf: [
        {
          type: 'string',
          pattern: classList,
          description: `a comma-separated list of ${FAILURE_CLASSES.join(', ')}`,
        },
        { type: 'array', items: { enum: FAILURE_CLASSES }, minItems: 1 },
      ],
    },
    via: { enum: ROUTES },
  },
  additionalProperties: false,
};

const schema = {
  // functions.<name>.immortal
  function: { anyOf: [{ type: 'boolean' }, options] },
  // custom.immortal: defaults for every attached function of the service
  custom: options,
};

const typeOf = (value) => {
  if (Array.isArray(value)) return 'array';
  if (value === null) return 'null';
  if (Number.isInteger(value)) return 'integer';
  return typeof value;
};

const show = (value) => JSON.stringify(value);

// The first violation of `rule` by `value` at `path`, as a sentence, or null. Covers
// the keywords the schema above uses: type, enum, pattern, properties,
// additionalProperties, items, minItems, anyOf (and description, for the message).
const violation = (rule, value, path) => {
  if (rule.anyOf) {
    const failures = rule.anyOf.map((branch) => violation(branch, value, path));
    if (failures.some((failure) => failure === null)) return null;
    // The branch of the value's own type says best what is wrong.
    const own = rule.anyOf.findIndex((branch) => branch.type === typeOf(value));
    if (own >= 0) return failures[own];
    const wanted = rule.anyOf.map((branch) => branch.type || 'one of the listed values');
    return `${path} must be ${[...new Set(wanted)].join(' or ')}, not ${show(value)}`;
  }
  if (rule.type && rule.type !== typeOf(value)) {
    return `${path} must be ${rule.type === 'object' ? 'an object' : `a ${rule.type}`}, not ${show(value)}`;
  }
  if (rule.enum && !rule.enum.includes(value)) {
    return `${path} is ${show(value)}; it must be one of: ${rule.enum.join(', ')}`;
  }
  if (rule.pattern && !new RegExp(rule.pattern).test(value)) {
    return `${path} is ${show(value)}; it must be ${rule.description}`;
  }
  if (rule.type === 'array') {
    if (rule.minItems && value.length < rule.minItems) return `${path} must not be empty`;
    for (const [index, item] of value.entries()) {
      const found = violation(rule.items, item, `${path}[${index}]`);
      if (found) return found;
    }
  }
  if (rule.type === 'object') {
    for (const key of Object.keys(value)) {
      if (!rule.properties[key] && rule.additionalProperties === false) {
        return `${path} has the unknown key '${key}' (known keys: ${Object.keys(rule.properties).join(', ')})`;
      }
    }
    for (const [key, sub] of Object.entries(rule.properties)) {
      if (value[key] === undefined) continue;
      const found = violation(sub, value[key], `${path}.${key}`);
      if (found) return found;
    }
  }
  return null;
};

const relaunchList = (relaunch) => (Array.isArray(relaunch) ? relaunch : relaunch.split(','));

// The settings of one function: its own over the service's defaults over the built-in
// ones. `fail(message)` throws the framework's error; null when it is not attached.
const resolve = ({ name, value, defaults, stage, fail }) => {
  if (value === undefined || value === false) return null;
  const own = violation(schema.function, value, `functions.${name}.immortal`);
  if (own) fail(own);
  const base = defaults || {};
  const given = value === true ? {} : value;
  const relaunch = given.relaunch || base.relaunch;
  return {
    stack: given.stack || base.stack || `immortal-${stage}`,
    via: given.via || base.via || 'destination',
    relaunch: relaunch ? relaunchList(relaunch) : null,
  };
};

// custom.immortal, checked the same way.
const defaults = ({ value, fail }) => {
  if (value === undefined) return {};
  const found = violation(schema.custom, value, 'custom.immortal');
  if (found) fail(found);
  return value;
};

module.exports = { schema, resolve, defaults, FAILURE_CLASSES, ROUTES };
