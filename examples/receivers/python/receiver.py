#!/usr/bin/env python3
"""A receiver for webhook-operator deliveries, Python standard library only.

Environment:
  PORT               port to listen on (default 3000)
  WEBHOOK_SECRET     the endpoint's signing secret (required), e.g.
                     kubectl -n pitchey get secret crm-signing -o jsonpath='{.data.secret}' | base64 -d
  WEBHOOK_SCHEME     `pitchey` (default) or `standard-webhooks`
  RECEIVED_LOG       file to append one JSON line per accepted event: {"event_id","event_type","attempt"}
  TOLERANCE_SECONDS  how far the signed timestamp may be from now (default 300)

Answers 401 on a missing/bad signature or a stale timestamp, 400 on a body that is not JSON,
200 on success and 200 on a duplicate event id (acknowledged, not processed again).
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "3000"))
SECRET = os.environ.get("WEBHOOK_SECRET", "")
SCHEME = os.environ.get("WEBHOOK_SCHEME", "pitchey")
RECEIVED_LOG = os.environ.get("RECEIVED_LOG", "")
TOLERANCE_SECONDS = int(os.environ.get("TOLERANCE_SECONDS", "300"))
MAX_BODY = 1024 * 1024


class Rejected(Exception):
    """The request is not a valid delivery (answered with 401)."""


def check_timestamp(value):
    """The signed timestamp must be close to now, so a captured request cannot be replayed later."""
    if not value or not value.isdigit():
        raise Rejected("timestamp header missing or not a number")
    skew = abs(int(time.time()) - int(value))
    if skew > TOLERANCE_SECONDS:
        raise Rejected(f"timestamp is {skew}s away from now")


def verify_pitchey(secret, headers, body):
    """X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret utf-8, "<X-Webhook-Timestamp>.<raw body>")>.

    During a rotation the previous key's signature is in X-Webhook-Signature-Previous: a receiver
    still holding the old secret matches that one.
    """
    timestamp = headers.get("X-Webhook-Timestamp")
    check_timestamp(timestamp)
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    candidates = [headers.get("X-Webhook-Signature"), headers.get("X-Webhook-Signature-Previous")]
    if not candidates[0]:
        raise Rejected("X-Webhook-Signature missing")
    if not any(c and hmac.compare_digest(c.strip(), expected) for c in candidates):
        raise Rejected("Invalid signature")


def verify_standard(secret, headers, body):
    """webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<raw body>")>,
    key = base64-decoded part of `whsec_…`; several space-separated signatures during a rotation."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not signatures:
        raise Rejected("webhook-id or webhook-signature missing")
    check_timestamp(timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return
    raise Rejected("Invalid signature")


VERIFY = {"pitchey": verify_pitchey, "standard-webhooks": verify_standard}

# Event ids already processed: retries and replays reuse the event id. Seeded from RECEIVED_LOG so a
# restart does not forget them; a real service keeps them in its database with the work it does.
seen = set()
seen_lock = threading.Lock()
if RECEIVED_LOG and os.path.exists(RECEIVED_LOG):
    with open(RECEIVED_LOG) as f:
        for line in f:
            try:
                seen.add(json.loads(line)["event_id"])
            except (ValueError, KeyError):
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200 if self.path == "/healthz" else 404, "ok" if self.path == "/healthz" else "not found")

    def do_POST(self):  # any path: point the endpoint at e.g. http://<host>:<PORT>/webhooks/pitchey
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self.answer(413, "body too large")
        body = self.rfile.read(length)  # the raw bytes: verify before parsing
        try:
            VERIFY[SCHEME](SECRET, self.headers, body)
        except Rejected as problem:
            self.log_message("401 %s", problem)
            return self.answer(401, str(problem))
        except (ValueError, TypeError) as problem:  # e.g. an undecodable whsec_ secret
            self.log_message("401 %s", problem)
            return self.answer(401, "Invalid signature")
        try:
            event = json.loads(body)
        except ValueError:
            return self.answer(400, "body is not JSON")
        event_id = event.get("event_id") or self.headers.get("X-Webhook-Event-Id")
        event_type = (event.get("data") or {}).get("event_type") or self.headers.get("X-Webhook-Event-Type")
        attempt = int(self.headers.get("X-Webhook-Attempt") or 1)
        with seen_lock:
            duplicate = event_id in seen
            if not duplicate:
                seen.add(event_id)
                if RECEIVED_LOG:
                    with open(RECEIVED_LOG, "a") as f:
                        f.write(json.dumps({"event_id": event_id, "event_type": event_type, "attempt": attempt}) + "\n")
        if duplicate:
            self.log_message("200 duplicate %s (%s, attempt %d) ignored", event_id, event_type, attempt)
            return self.answer(200, "OK (duplicate)")
        self.log_message("200 %s %s (attempt %d)", event_type, event_id, attempt)
        self.answer(200, "OK")


def main():
    if not SECRET:
        sys.exit("WEBHOOK_SECRET is required")
    if SCHEME not in VERIFY:
        sys.exit(f"WEBHOOK_SCHEME must be pitchey or standard-webhooks, not {SCHEME}")
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"listening on :{PORT}, scheme {SCHEME}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
