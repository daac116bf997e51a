#!/usr/bin/env node
// Runs the product document's integration templates (seed-templates.js, unchanged) on webhook
// payloads and prints what each would have sent, without sending anything.
//
//   node tests/templates/run-templates.js [--config config.json] [--slack-webhook-url URL]
//     [--hubspot-token TOKEN] [--mailchimp-list-id ID] [--mailchimp-token TOKEN] [payloads|-]
//
// The config file is a JSON object whose keys are the environment variables the templates read
// (SLACK_WEBHOOK_URL, HUBSPOT_TOKEN, MAILCHIMP_LIST_ID, MAILCHIMP_TOKEN); flags override it.
// Payloads are read from the file named (stdin when none or `-`), one JSON document per line: the
// exact bodies a webhook receiver got. For every payload and every template, in that order, one
// JSON line is printed:
//   {"event_id": "evt_…", "template": "slack", "calls": [{"url", "method", "headers", "body"}],
//    "error": null, "response": {"status": 200, "body": "OK"}}
// `calls` are the fetch calls the handler made (recorded, not sent); `error` is the exception the
// handler threw, as "Name: message" (a template that throws sends nothing the test counts: its
// calls before the throw are still listed). Only Node's standard library is used.
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');

const ENV_FLAGS = {
  '--slack-webhook-url': 'SLACK_WEBHOOK_URL',
  '--hubspot-token': 'HUBSPOT_TOKEN',
  '--mailchimp-list-id': 'MAILCHIMP_LIST_ID',
  '--mailchimp-token': 'MAILCHIMP_TOKEN',
};

function usage(message) {
  process.stderr.write(`run-templates.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const env = {};
  const fromFlags = {};
  let input = '-';
  let inputGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--config') {
      const config = JSON.parse(fs.readFileSync(value(), 'utf8'));
      if (config === null || typeof config !== 'object' || Array.isArray(config)) {
        usage('the config must be a JSON object');
      }
      for (const [key, v] of Object.entries(config)) env[key] = String(v);
    } else if (Object.prototype.hasOwnProperty.call(ENV_FLAGS, arg)) {
      fromFlags[ENV_FLAGS[arg]] = value();
    } else if (arg === '-' || !arg.startsWith('--')) {
      if (inputGiven) usage(`one payload file only, got ${input} and ${arg}`);
      input = arg;
      inputGiven = true;
    } else {
      usage(`unknown option ${arg}`);
    }
  }
  return { env: Object.assign(env, fromFlags), input };
}

// The Express app the templates register on: only `app.post(path, handler)`.
function makeApp(handlers) {
  return {
    post(route, handler) {
      if (typeof handler !== 'function') throw new Error(`no handler for ${route}`);
      handlers.push({ route, handler });
    },
  };
}

// A stub `res`: records the status and what was sent.
function makeRes() {
  const res = {
    statusCode: null,
    sent: undefined,
    status(code) {
      res.statusCode = code;
      return res;
    },
    send(body) {
      res.sent = body;
      return res;
    },
  };
  return res;
}

// The name of a template from its route: '/webhooks/slack' -> 'slack'.
function templateName(route) {
  return route.split('/').filter(Boolean).pop();
}

function describe(error) {
  if (error && typeof error === 'object' && 'message' in error) {
    return `${error.name || 'Error'}: ${error.message}`;
  }
  return String(error);
}

function main() {
  const { env, input } = parseArgs(process.argv.slice(2));
  const handlers = [];
  let calls = null;
  // fetch records the call for the handler running now and sends nothing.
  const fetch = (url, options = {}) => {
    if (calls === null) throw new Error('fetch called outside a handler');
    calls.push({
      url: String(url),
      method: options.method === undefined ? 'GET' : options.method,
      headers: options.headers === undefined ? {} : options.headers,
      body: options.body === undefined ? null : options.body,
    });
    return Promise.resolve({ ok: true, status: 200, text: async () => '', json: async () => ({}) });
  };
  const context = vm.createContext({
    app: makeApp(handlers),
    fetch,
    process: { env },
    console,
  });
  const file = path.join(__dirname, 'seed-templates.js');
  vm.runInContext(fs.readFileSync(file, 'utf8'), context, { filename: file });
  if (handlers.length === 0) usage(`${file} registered no handler`);

  const text = fs.readFileSync(input === '-' ? 0 : input, 'utf8');
  const out = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let eventId = null;
    try {
      eventId = JSON.parse(line).event_id ?? null;
    } catch (_) {
      // The handlers get the line as it is and report the parse error themselves.
    }
    for (const { route, handler } of handlers) {
      calls = [];
      const res = makeRes();
      let error = null;
      try {
        handler({ body: line, headers: {} }, res);
      } catch (e) {
        error = describe(e);
      }
      out.push(
        JSON.stringify({
          event_id: eventId,
          template: templateName(route),
          calls,
          error,
          response: { status: res.statusCode, body: res.sent === undefined ? null : res.sent },
        }),
      );
      calls = null;
    }
  }
  process.stdout.write(out.length ? out.join('\n') + '\n' : '');
}

main();
