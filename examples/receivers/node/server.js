// A receiver for webhook-operator deliveries, written like the seed's Express example.
//
// Environment:
//   PORT             port to listen on (default 3000)
//   WEBHOOK_SECRET   the endpoint's signing secret (required), e.g.
//                    kubectl -n pitchey get secret crm-signing -o jsonpath='{.data.secret}' | base64 -d
//   WEBHOOK_SCHEME   `pitchey` (default) or `standard-webhooks`
//   RECEIVED_LOG     file to append one JSON line per accepted event: {"event_id","event_type","attempt"}
//   TOLERANCE_SECONDS  how far X-Webhook-Timestamp may be from now (default 300)
//
// Answers 401 on a missing/bad signature or a stale timestamp, 400 on a body that is not JSON,
// 200 on success and 200 on a duplicate event id (acknowledged, not processed again).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const express = require('express');
const { Webhook } = require('standardwebhooks');

const PORT = Number(process.env.PORT || 3000);
const SECRET = process.env.WEBHOOK_SECRET;
const SCHEME = process.env.WEBHOOK_SCHEME || 'pitchey';
const RECEIVED_LOG = process.env.RECEIVED_LOG || '';
const TOLERANCE_SECONDS = Number(process.env.TOLERANCE_SECONDS || 300);

if (!SECRET) {
  console.error('WEBHOOK_SECRET is required');
  process.exit(2);
}
if (!['pitchey', 'standard-webhooks'].includes(SCHEME)) {
  console.error(`WEBHOOK_SCHEME must be pitchey or standard-webhooks, not ${SCHEME}`);
  process.exit(2);
}

// Event ids already processed. Retries and replays reuse the event id, so a receiver that keeps
// these ids processes every event once. Seeded from RECEIVED_LOG so a restart does not forget them;
// a real service would keep them in its database, in the same transaction as the work.
const seen = new Set();
if (RECEIVED_LOG && fs.existsSync(RECEIVED_LOG)) {
  for (const line of fs.readFileSync(RECEIVED_LOG, 'utf8').split('\n')) {
    try { if (line) seen.add(JSON.parse(line).event_id); } catch (_) { /* skip partial lines */ }
  }
}

// The seed's signature check: HMAC-SHA256 over `timestamp + '.' + payload`, keyed with the secret
// string, compared with `sha256=<hex>` in constant time. During a rotation the previous key's
// signature comes in X-Webhook-Signature-Previous: a receiver that still has the old secret
// matches that one, a receiver that already has the new secret matches X-Webhook-Signature.
function verifySignature(payload, signature, secret, timestamp) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(timestamp + '.' + payload)
    .digest('hex');
  const given = Buffer.from(String(signature).replace('sha256=', ''));
  const expected = Buffer.from(expectedSignature);
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

function verifyPitchey(req) {
  const signature = req.headers['x-webhook-signature'];
  const previous = req.headers['x-webhook-signature-previous'];
  const timestamp = req.headers['x-webhook-timestamp'];
  const payload = req.body;
  if (!signature || !timestamp) return 'missing X-Webhook-Signature or X-Webhook-Timestamp';
  // Validate timestamps: a captured request cannot be replayed later.
  if (!/^\d+$/.test(timestamp)) return 'X-Webhook-Timestamp is not a number';
  const age = Math.abs(Math.floor(Date.now() / 1000) - Number(timestamp));
  if (age > TOLERANCE_SECONDS) return `timestamp is ${age}s away from now`;
  const ok = [signature, previous].filter(Boolean)
    .some((candidate) => verifySignature(payload, candidate, SECRET, timestamp));
  return ok ? null : 'Invalid signature';
}

const standard = SCHEME === 'standard-webhooks' ? new Webhook(SECRET) : null;
function verifyStandard(req) {
  try {
    // Checks webhook-signature (any of the space-separated v1 signatures) and that
    // webhook-timestamp is within 5 minutes.
    standard.verify(req.body, {
      'webhook-id': req.headers['webhook-id'],
      'webhook-timestamp': req.headers['webhook-timestamp'],
      'webhook-signature': req.headers['webhook-signature'],
    });
    return null;
  } catch (err) {
    return `Invalid signature: ${err.message}`;
  }
}

const app = express();
app.use(express.raw({ type: 'application/json', limit: '1mb' }));

app.get('/healthz', (_req, res) => res.send('ok'));

// Any path: point the endpoint at e.g. http://<host>:<PORT>/webhooks/pitchey.
app.use((req, res) => {
  if (req.method !== 'POST') return res.status(405).send('POST only');
  if (!Buffer.isBuffer(req.body)) return res.status(400).send('expected Content-Type: application/json');
  const problem = SCHEME === 'pitchey' ? verifyPitchey(req) : verifyStandard(req);
  if (problem) {
    console.log(`401 ${problem}`);
    return res.status(401).send(problem);
  }
  let event;
  try {
    event = JSON.parse(req.body);
  } catch (_) {
    return res.status(400).send('body is not JSON');
  }
  const eventId = event.event_id || req.headers['x-webhook-event-id'];
  const eventType = (event.data && event.data.event_type) || req.headers['x-webhook-event-type'];
  const attempt = Number(req.headers['x-webhook-attempt'] || 1);
  // Idempotency: the same event id again (a retry after a lost response, a replay) is acknowledged
  // without being processed twice.
  if (seen.has(eventId)) {
    console.log(`200 duplicate ${eventId} (${eventType}, attempt ${attempt}) ignored`);
    return res.status(200).send('OK (duplicate)');
  }
  seen.add(eventId);
  if (RECEIVED_LOG) {
    fs.appendFileSync(RECEIVED_LOG, JSON.stringify({ event_id: eventId, event_type: eventType, attempt }) + '\n');
  }
  // Handle different event types (the seed's switch); answer fast, do slow work asynchronously.
  switch (eventType) {
    case 'user.created':
      console.log(`user.created ${eventId}: ${event.data.user && event.data.user.email} (attempt ${attempt})`);
      break;
    default:
      console.log(`${eventType} ${eventId} (attempt ${attempt})`);
  }
  res.status(200).send('OK');
});

const server = app.listen(PORT, () => console.log(`listening on :${PORT}, scheme ${SCHEME}`));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
