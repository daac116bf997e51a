//! The seed's own Node receiver code, run unmodified against real deliveries (skipped with a
//! printed reason only if `node` is not installed).
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use webhook_operator::delivery::outcome::{decide, Outcome};
use webhook_operator::delivery::retry::RetryPolicy;
use webhook_operator::delivery::signing::{SigningKeys, SigningScheme};

use super::support::{self, PITCHEY_SECRET, STANDARD_SECRET};

/// An HTTP server standing in for Express with `express.raw({ type: 'application/json' })`,
/// whose route body is the seed's "Handle Webhook Events" handler and its `verifySignature`,
/// copied verbatim; plus a Standard Webhooks receiver written from that specification.
const RECEIVER: &str = r#"
const http = require('http');
const crypto = require('crypto');

// From the seed, "Signature Verification", verbatim.
function verifySignature(payload, signature, secret, timestamp) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(timestamp + '.' + payload)
    .digest('hex');
  
  return crypto.timingSafeEqual(
    Buffer.from(signature.replace('sha256=', '')),
    Buffer.from(expectedSignature)
  );
}

function standardWebhooks(req, payload) {
  const key = Buffer.from(process.env.STANDARD_SECRET.replace(/^whsec_/, ''), 'base64');
  const id = req.headers['webhook-id'];
  const ts = req.headers['webhook-timestamp'];
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const expected = crypto.createHmac('sha256', key).update(`${id}.${ts}.${payload}`).digest('base64');
  return req.headers['webhook-signature'].split(' ').some(
    (s) => s.startsWith('v1,') && s.length === expected.length + 3 &&
      crypto.timingSafeEqual(Buffer.from(s.slice(3)), Buffer.from(expected)));
}

const server = http.createServer((httpReq, res) => {
  const chunks = [];
  httpReq.on('data', (c) => chunks.push(c));
  httpReq.on('end', () => {
    // express.raw({ type: 'application/json' }): a Buffer body only for that content type.
    if (httpReq.headers['content-type'] !== 'application/json') { res.statusCode = 415; return res.end(); }
    const req = { headers: httpReq.headers, body: Buffer.concat(chunks) };
    res.status = (code) => { res.statusCode = code; return res; };
    res.send = (text) => res.end(text);
    if (req.headers['webhook-signature']) {
      if (!standardWebhooks(req, req.body)) return res.status(401).send('Invalid signature');
      return res.status(200).send('OK');
    }
    // From the seed, "Handle Webhook Events", verbatim (apart from the handlers it calls).
    const signature = req.headers['x-webhook-signature'];
    const timestamp = req.headers['x-webhook-timestamp'];
    const payload = req.body;
    
    const expectedSignature = crypto
      .createHmac('sha256', process.env.WEBHOOK_SECRET)
      .update(timestamp + '.' + payload)
      .digest('hex');
    
    if (signature !== 'sha256=' + expectedSignature) {
      return res.status(401).send('Invalid signature');
    }
    if (!verifySignature(payload, signature, process.env.WEBHOOK_SECRET, timestamp)) {
      return res.status(401).send('verifySignature rejected it');
    }
    const event = JSON.parse(payload);
    if (event.data.event_type !== 'user.created' || event.data.user.id !== 123) {
      return res.status(422).send('unexpected payload');
    }
    res.status(200).send('OK');
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#;

#[tokio::test]
async fn seed_node_receiver_accepts_our_deliveries() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::skip_unless_ci("node is not installed");
        return;
    }
    let mut child = tokio::process::Command::new("node")
        .args(["-e", RECEIVER])
        .env("WEBHOOK_SECRET", PITCHEY_SECRET)
        .env("STANDARD_SECRET", STANDARD_SECRET)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/webhooks/pitchey")).unwrap();
    let client = support::loopback_client();

    for scheme in [SigningScheme::Pitchey, SigningScheme::StandardWebhooks] {
        let event = support::event(scheme);
        let result = support::send(&client, url.clone(), &event, 1, Duration::from_secs(5)).await;
        assert_eq!(result.status, Some(200), "{scheme:?}: {result:?}");
        assert_eq!(result.body_snippet, "OK");

        // During a rotation the receiver may hold either secret.
        let mut rotating = support::event(scheme);
        rotating.keys = SigningKeys {
            primary: rotating
                .keys
                .primary
                .replace("my-", "new-")
                .replace("MfKQ", "AAAA"),
            previous: Some(rotating.keys.primary.clone()),
        };
        let result =
            support::send(&client, url.clone(), &rotating, 1, Duration::from_secs(5)).await;
        let expected = match scheme {
            // The seed's code reads X-Webhook-Signature only: the new key's.
            SigningScheme::Pitchey => 401,
            // Standard Webhooks receivers try every signature.
            SigningScheme::StandardWebhooks => 200,
            SigningScheme::None => panic!("scheme none is not verified by receivers"),
        };
        assert_eq!(
            result.status,
            Some(expected),
            "{scheme:?} rotating: {result:?}"
        );

        let mut forged = support::event(scheme);
        forged.keys = SigningKeys::new(match scheme {
            SigningScheme::Pitchey => "wrong-secret",
            SigningScheme::StandardWebhooks => "whsec_d3Jvbmctc2VjcmV0",
            SigningScheme::None => panic!("scheme none is not verified by receivers"),
        });
        let result = support::send(&client, url.clone(), &forged, 1, Duration::from_secs(5)).await;
        assert_eq!(result.status, Some(401), "{scheme:?}: {result:?}");
        let outcome = decide(
            &RetryPolicy::default(),
            &result,
            1,
            jiff::Timestamp::now(),
            0.5,
        );
        assert!(
            matches!(
                outcome,
                Outcome::DeadLetter {
                    endpoint_gone: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    child.start_kill().ok();
}
