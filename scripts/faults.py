#!/usr/bin/env python3
"""Faults around the operator under load: the API server goes away, the API server is slow,
PostgreSQL goes away.

On a control plane of its own (scripts/control-plane.sh with its own directory and ports; `down`
and `up`), with the controller and dispatchers as local processes and a loopback receiver:

apiserver   the API server and etcd stopped for 60 s, then started again on the same data
  before    four endpoints take a steady stream of events through the ingest API (ok-a, ok-b;
            flaky answers 503 to the first attempt of half the events; mixed answers 410 to a
            quarter of them, which become dead letters); ten WebhookEvent resources go to ok-a,
            whose receiver holds them until the outage begins, so they are delivered while the
            API server is down
  outage    the publisher keeps going with a token reviewed before the outage (its decision cached
            for --auth-cache-seconds); a token never seen before is refused 503 auth_unavailable
            with Retry-After, at once rather than after a hang; deliveries go on from the caches
  after     every accepted event is accounted for per endpoint: delivered (the receiver's log)
            plus dead-lettered (the store's dead letters) equals accepted, nothing delivered twice,
            nothing pending; each endpoint's status.delivery says the same; every WebhookEvent
            reaches phase Delivered; the controller, never restarted, lost its Lease, leads again
            and makes a new endpoint Ready; every endpoint has exactly one signing Secret
slow        the API server behind a proxy that adds 2 s each way: a new dispatcher delivers a burst
            of events at the rate it does with the API server reached directly (runs alternate,
            best of two each; the figures are printed, not asserted)
postgres    two dispatchers sharing a PostgreSQL of their own (scripts/postgres.sh with its own
            directory and port) under load: the server crashes (immediate stop) for 15 s and comes
            back, then every client connection is cut three times. Every answer is 202 (stored) or
            503 with Retry-After (not stored), both replicas answer 202 again by themselves, and
            every accepted event reaches each endpoint (or mixed's dead letters): within seconds,
            or within the claim lease (330 s) for one whose claim's commit answer was cut

Prints the figures and exits non-zero naming every check that failed.
  scripts/faults.py [--phases apiserver,slow,postgres] [--outage-seconds 60] [--rate 50]
                    [--slow-seconds 2] [--burst 3000] [--postgres-outage-seconds 15]
Builds nothing: needs target/debug/webhook-operator (cargo build --bin webhook-operator).
"""
import argparse
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "webhook-operator")
NS = "fault"
CP_DIR = "/tmp/webhook-operator-cp-fault"
CP_ENV = dict(os.environ, WO_CONTROL_PLANE_DIR=CP_DIR, WO_APISERVER_PORT="16611", WO_ETCD_PORT="23810",
              WO_KCM_PORT="10467")
ADMIN = "test-admin-token"          # used before the outage: its review is cached
NEWCOMER = "test-publisher-token"   # first used during the outage
LOAD_ENDPOINTS = ("ok-a", "ok-b", "flaky", "mixed")
RESOURCE_EVENTS = 10
FAILED = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def project_script(script, command, env):
    """Runs scripts/`script` `command`; its output, or exits with it when it fails."""
    out = subprocess.run([os.path.join(ROOT, "scripts", script), command], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"scripts/{script} {command} failed:\n{out.stdout}{out.stderr}")
    return out.stdout.strip()


def control_plane(command):
    return project_script("control-plane.sh", command, CP_ENV)


def kubectl(*args, stdin=None, check_rc=True):
    out = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True,
                         env=dict(os.environ, KUBECONFIG=KUBECONFIG))
    if check_rc and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def wait_for(what, seconds, probe):
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            print(f"ok: {what}", flush=True)
            return value
        if time.monotonic() > deadline:
            return check(False, f"{what} (within {seconds} s)")
        time.sleep(0.5)


class Server(http.server.ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog fit for bursts: socketserver's default of 5
    drops connection attempts when many arrive at once, and each dropped SYN costs the client a
    retransmission (1 s, 3 s, …, or its 30 s timeout)."""
    daemon_threads = True
    request_queue_size = 1024


class Receiver:
    """Loopback HTTP receiver. /ok-a, /ok-b: 200; /flaky: 503 to the first attempt of half the events;
    /mixed: 410 to a quarter of them. Failures are picked by event id, so they are never so
    consecutive that a circuit opens. pitch.created (the WebhookEvent resources) is held until
    `release` is set."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delivered = defaultdict(list)   # path -> event ids answered 2xx
        self.held = 0
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.strip("/")
                event_type = self.headers.get("X-Webhook-Event-Type", "")
                if event_type == "pitch.created":
                    with receiver.lock:
                        receiver.held += 1
                    receiver.release.wait(120)
                event_id = self.headers.get("X-Webhook-Event-Id", "")
                bucket = int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 4
                first = self.headers.get("X-Webhook-Attempt") == "1"
                status = {"flaky": 503 if first and bucket < 2 else 200,
                          "mixed": 410 if bucket == 0 else 200}.get(path, 200)
                if status == 200:
                    with receiver.lock:
                        receiver.delivered[(path, event_type)].append(event_id)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self, path, event_type="user.created"):
        with self.lock:
            return list(self.delivered[(path, event_type)])

    def count(self, path):
        """2xx answers on `path`, every event type."""
        with self.lock:
            return sum(len(ids) for (at, _), ids in self.delivered.items() if at == path)


def post_event(port, token, timeout=30, event_type="user.created"):
    """(status, parsed body, headers, seconds)."""
    body = json.dumps({"type": event_type, "data": {"user": {"id": 1}}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/namespaces/{NS}/events", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw, headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    except OSError as error:
        return None, {"error": str(error)}, {}, time.monotonic() - started
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        parsed = {"raw": raw.decode(errors="replace")}
    return status, parsed, headers, time.monotonic() - started


class Publisher(threading.Thread):
    """`rate` events/s with the admin token (to each port in turn); every answer recorded with the
    phase it fell in."""

    def __init__(self, ports, rate):
        super().__init__(daemon=True)
        self.ports, self.interval = ports if isinstance(ports, list) else [ports], 1.0 / rate
        self.no_retry_after = 0             # 503s without Retry-After
        self.last = defaultdict(list)       # port -> statuses, in order
        self.phase = "before"
        self.stop = threading.Event()
        self.accepted = []                  # event ids answered 202
        self.fanout = {}                    # event id -> (phase, deliveries in the answer)
        self.answers = Counter()            # (phase, status)
        self.slowest = defaultdict(float)   # phase -> seconds

    def run(self):
        next_at = time.monotonic()
        sent = 0
        while not self.stop.is_set():
            phase = self.phase
            port = self.ports[sent % len(self.ports)]
            sent += 1
            status, body, headers, seconds = post_event(port, ADMIN)
            self.answers[(phase, status)] += 1
            self.last[port].append(status)
            if status == 503 and not headers.get("Retry-After"):
                self.no_retry_after += 1
            self.slowest[phase] = max(self.slowest[phase], seconds)
            if status == 202:
                self.accepted.append(body["event_id"])
                self.fanout[body["event_id"]] = (phase, body.get("deliveries"))
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def dead_letters(port, endpoint, event_type="user.created"):
    """The event ids of the endpoint's dead letters (of `event_type`; all with None)."""
    ids, cursor = [], None
    while True:
        url = f"http://127.0.0.1:{port}/v1/namespaces/{NS}/deadletters?endpoint={endpoint}&limit=500"
        if cursor:
            url += f"&cursor={cursor}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            page = json.load(answer)
        ids += [item["event"]["event_id"] for item in page["items"] if event_type in (None, item["event"]["event_type"])]
        cursor = page.get("next_cursor")
        if not cursor:
            return ids


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def start_dispatcher(work, name, kubeconfig, ingest, metrics, extra=()):
    """A dispatcher with a store of its own (SQLite unless `extra` says otherwise); its log in
    `work`/`name`.log."""
    log = open(os.path.join(work, f"{name}.log"), "w")
    return subprocess.Popen(
        [BIN, "dispatcher", "--listen-addr", f"127.0.0.1:{ingest}", "--metrics-addr", f"127.0.0.1:{metrics}",
         "--store-path", os.path.join(work, f"{name}.db"), "--allow-plain-http", "--egress-allow-cidr",
         "127.0.0.0/8", "--status-interval-seconds", "1", "--auth-cache-seconds", "600", "--identity", name,
         "--watch-namespace", NS, *extra],
        env=dict(os.environ, KUBECONFIG=kubeconfig, RUST_LOG="info,webhook_operator=debug"),
        stdout=log, stderr=subprocess.STDOUT)


class SlowProxy:
    """A TCP proxy on loopback in front of the API server that holds every chunk, both ways, for
    `delay` seconds (in order, without limiting throughput): each request and answer arrives that
    much later."""

    def __init__(self, target_port, delay):
        import asyncio
        self.asyncio, self.target_port, self.delay = asyncio, target_port, delay
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        started.wait(10)

    async def handle(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await self.asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await self.asyncio.gather(self.pipe(client_reader, server_writer), self.pipe(server_reader, client_writer),
                                  return_exceptions=True)

    async def pipe(self, source, sink):
        queue = self.asyncio.Queue()

        async def read():
            while True:
                data = await source.read(65536)
                await queue.put((self.loop.time() + self.delay, data))
                if not data:
                    return

        async def write():
            while True:
                due, data = await queue.get()
                await self.asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    sink.close()
                    return
                sink.write(data)
                await sink.drain()

        await self.asyncio.gather(read(), write())


def post_batch(port, events, event_type):
    body = json.dumps({"events": [{"type": event_type, "data": {"n": i}} for i in range(events)]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/namespaces/{NS}/events:batch", data=body,
                                     method="POST", headers={"Authorization": f"Bearer {ADMIN}",
                                                             "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        print(f"   events:batch answered {error.code}: {error.read().decode(errors='replace')}")
        return error.code


def throughput(work, label, kubeconfig, receiver, events):
    """Deliveries/s of `events` user.updated events (to the four load endpoints) by a new dispatcher
    whose API server is reached through `kubeconfig`."""
    ingest, metrics = free_port(), free_port()
    dispatcher = start_dispatcher(work, f"dispatcher-{label}", kubeconfig, ingest, metrics)
    try:
        if not wait_for(f"{label}: dispatcher ready", 120, lambda: ready(metrics)):
            return None
        # Its first request pays for the TokenReview and SubjectAccessReview; later ones are cached.
        check(post_batch(ingest, 1, "user.deleted") == 202, f"{label}: the first request's reviews answered")
        # Distinct events per endpoint: an attempt whose answer was late is sent again (at least
        # once), so raw counts may differ between endpoints.
        names = ("ok-a", "ok-b", "flaky")
        before = {name: len(set(receiver.ids(name, "user.updated"))) for name in names}
        started = time.monotonic()
        for _ in range(events // 500):
            post_batch(ingest, 500, "user.updated")
        done = wait_for(f"{label}: {events} events delivered to ok-a, ok-b and flaky", 300, lambda: all(
            len(set(receiver.ids(name, "user.updated"))) >= before[name] + events for name in names))
        seconds = time.monotonic() - started
        return (3 * events / seconds) if done else None
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)


PG_ENV = dict(os.environ, WO_POSTGRES_DIR="/tmp/wo-postgres-fault", WO_POSTGRES_PORT="15442")


def postgres(command):
    return project_script("postgres.sh", command, PG_ENV)


def cut_connections(url):
    """Terminates every client connection but its own: transactions in flight are cut."""
    out = subprocess.run(["psql", url, "-Atc", "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                          "where backend_type = 'client backend' and pid <> pg_backend_pid()"],
                         capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def postgres_phase(args, work, receiver, processes):
    """Two dispatchers on one PostgreSQL under load: the server crashes (immediate stop) and comes
    back, then every connection is cut three times; every accepted event is accounted for."""
    print("== PostgreSQL: two dispatchers sharing it; the server stopped, restarted, connections cut",
          flush=True)
    postgres("stop")
    url = postgres("start")
    ports, replicas = [], []
    for name in ("pg-a", "pg-b"):
        ingest, metrics = free_port(), free_port()
        replicas.append(start_dispatcher(work, name, KUBECONFIG, ingest, metrics, [
            "--store", "postgres", "--database-url", url, "--lease-namespace", NS, "--partitions", "8"]))
        ports.append((ingest, metrics))
    processes.extend(replicas)
    for ingest, metrics in ports:
        wait_for(f"dispatcher :{ingest} ready", 60, lambda metrics=metrics: ready(metrics))
        wait_for(f"dispatcher :{ingest} routes user.* to the four endpoints", 30, lambda ingest=ingest: post_event(
            ingest, ADMIN, event_type="user.probe")[1].get("deliveries") == len(LOAD_ENDPOINTS))
    publisher = Publisher([ingest for ingest, _ in ports], args.rate)
    publisher.start()
    time.sleep(10)
    publisher.phase = "down"
    postgres("down")
    time.sleep(args.postgres_outage_seconds)
    publisher.phase = "restarted"
    postgres("up")
    time.sleep(10)
    for _ in range(3):
        publisher.phase = "cut"
        print(f"   connections cut: {cut_connections(url)}", flush=True)
        time.sleep(3)
    publisher.phase = "after"
    time.sleep(10)
    publisher.stop.set()
    publisher.join()
    print("   answers by phase and status:", dict(sorted(publisher.answers.items(), key=str)))
    odd = {k: v for k, v in publisher.answers.items() if k[1] not in (202, 503)}
    check(not odd, f"every answer was 202 (stored) or 503 (not stored) ({odd})")
    check(publisher.no_retry_after == 0, f"every 503 carried Retry-After ({publisher.no_retry_after} did not)")
    check(publisher.answers[("down", 503)] > 0, "ingest answered 503 while PostgreSQL was down")
    for port, statuses in publisher.last.items():
        check(statuses[-20:] == [202] * 20, f"dispatcher :{port} recovered by itself (its last 20 answers 202)")
    check(all(p.poll() is None for p in replicas), "neither replica exited")

    accepted = set(publisher.accepted)

    # A claim whose commit answer was cut leaves its deliveries leased to the replica for the claim
    # lease (330 s, longer than the longest attempt): they are sent again after it.
    started, last_print = time.monotonic(), 0.0
    while True:
        delivered = {name: set(receiver.ids(name)) & accepted for name in LOAD_ENDPOINTS}
        dead = set(dead_letters(ports[0][0], "mixed"))
        missing = {name: len(accepted - delivered[name] - (dead if name == "mixed" else set()))
                   for name in LOAD_ENDPOINTS}
        elapsed = time.monotonic() - started
        if not any(missing.values()):
            check(True, f"every one of the {len(accepted)} accepted events delivered (or dead-lettered at mixed), "
                        f"{elapsed:.0f} s after the load stopped")
            break
        if elapsed > 420:
            check(False, f"every accepted event delivered within 420 s (still missing: {missing})")
            break
        if elapsed - last_print >= 30:
            print(f"   {elapsed:.0f} s: not yet delivered: {missing}", flush=True)
            last_print = elapsed
        time.sleep(2)
    twice = {name: sum(n - 1 for i, n in Counter(receiver.ids(name)).items() if i in accepted and n > 1)
             for name in LOAD_ENDPOINTS}
    print(f"   accepted {len(accepted)}; redeliveries (at least once: an attempt whose record was cut): {twice}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_own_control_plane(prefix, body):
    """Starts the control plane of CP_ENV (stopping any left running), points KUBECTL and
    KUBECONFIG at it, runs body(work, processes) with a new work directory, then stops every
    process body started and the control plane, whatever happened. Returns the work directory."""
    global KUBECTL, KUBECONFIG
    control_plane("stop")
    print(control_plane("start"), flush=True)
    KUBECTL = os.path.join(control_plane("bin"), "kubectl")
    KUBECONFIG = os.path.join(CP_ENV["WO_CONTROL_PLANE_DIR"], "kubeconfig")
    work = tempfile.mkdtemp(prefix=prefix)
    processes = []
    try:
        body(work, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        control_plane("stop")
    return work


def start_controller(work, metrics, identity):
    """The controller, watching NS, its log in `work`/controller.log."""
    return subprocess.Popen(
        [BIN, "controller", "--metrics-addr", f"127.0.0.1:{metrics}", "--allow-plain-http",
         "--lease-namespace", NS, "--identity", identity, "--watch-namespace", NS],
        env=dict(os.environ, KUBECONFIG=KUBECONFIG, RUST_LOG="info,webhook_operator=debug"),
        stdout=open(os.path.join(work, "controller.log"), "w"), stderr=subprocess.STDOUT)


def endpoint_ready(name):
    return kubectl("get", "whep", name, "-n", NS, "-o",
                   "jsonpath={.status.conditions[?(@.type=='Ready')].status}") == "True"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage-seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=50, help="events/s through the ingest API")
    parser.add_argument("--slow-seconds", type=float, default=2.0, help="latency the slow API server adds")
    parser.add_argument("--burst", type=int, default=3000, help="events per throughput run (a multiple of 500)")
    parser.add_argument("--postgres-outage-seconds", type=int, default=15)
    parser.add_argument("--phases", default="apiserver,slow,postgres",
                        help="which of apiserver, slow, postgres to run (comma-separated)")
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} is missing: cargo build --bin webhook-operator")

    print("== a control plane of its own", flush=True)
    try:
        work = on_own_control_plane("webhook-operator-fault.", lambda work, processes: run(args, work, processes))
    finally:
        postgres("stop")
    if FAILED:
        print(f"\n{len(FAILED)} check(s) failed (logs in {work}):")
        for what in FAILED:
            print(f"  - {what}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("\nevery check passed")


def run(args, work, processes):
    kubectl("apply", "--server-side", "-f", os.path.join(ROOT, "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("create", "namespace", NS)
    # The newcomer may publish: its refusal during the outage is for want of a review, not of rights.
    kubectl("create", "role", "publisher", "-n", NS, "--verb=create",
            "--resource=webhookevents.webhooks.pitchey.io")
    kubectl("create", "rolebinding", "publisher", "-n", NS, "--role=publisher", "--user=publisher")

    receiver = Receiver()
    ingest, dmetrics, cmetrics = free_port(), free_port(), free_port()
    controller = start_controller(work, cmetrics, "fault")
    processes.append(controller)
    dispatcher = start_dispatcher(work, "dispatcher", KUBECONFIG, ingest, dmetrics)
    processes.append(dispatcher)

    wait_for("controller ready", 60, lambda: ready(cmetrics))
    wait_for("dispatcher ready", 60, lambda: ready(dmetrics))

    endpoints = "".join(f"""---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {{name: {name}, namespace: {NS}, labels: {{load: "yes", resources: "{name == 'ok-a'}"}}}}
spec:
  url: http://127.0.0.1:{receiver.port}/{name}
  retryPolicy: {{baseDelay: 200ms, maxDelay: 1s, maxAttempts: 5}}
  rateLimit: {{requestsPerMinute: 60000, burst: 1000, adaptive: false}}
  circuitBreaker: {{failureThreshold: 1000, openDuration: 1s}}
""" for name in LOAD_ENDPOINTS)
    kubectl("apply", "-f", "-", stdin=endpoints + f"""---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {{name: load, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{load: "yes"}}}}
  eventTypes: ["user.*"]
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {{name: resources, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{resources: "True"}}}}
  eventTypes: ["pitch.created"]
""")
    for name in LOAD_ENDPOINTS:
        wait_for(f"{name} Ready", 60, lambda name=name: endpoint_ready(name))
    wait_for("subscriptions resolved", 30, lambda: "ok-a" in kubectl(
        "get", "whsub", "resources", "-n", NS, "-o", "jsonpath={.status.endpoints}"))

    # Routing reads the dispatcher's caches, which see a new subscription a moment after the API
    # server has it: probe until an event reaches all four endpoints.
    wait_for("the dispatcher routes user.* to the four endpoints", 30, lambda: post_event(
        ingest, ADMIN, event_type="user.probe")[1].get("deliveries") == len(LOAD_ENDPOINTS))
    if "apiserver" in args.phases:
        print("== steady load", flush=True)
        publisher = Publisher(ingest, args.rate)
        publisher.start()
        time.sleep(10)
        kubectl("apply", "-f", "-", stdin="".join(f"""---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEvent
metadata: {{name: pitch-{i}, namespace: {NS}}}
spec: {{type: pitch.created, ttlSecondsAfterFinished: 3600, data: {{pitch: {{id: {i}}}}}}}
""" for i in range(RESOURCE_EVENTS)))
        wait_for("the receiver holds a WebhookEvent's delivery", 30, lambda: receiver.held > 0)

        print(f"== the API server and etcd stopped for {args.outage_seconds} s", flush=True)
        control_plane("down")
        down_at = time.monotonic()
        publisher.phase = "outage"
        receiver.release.set()
        check(subprocess.run(["curl", "-skf", "-m", "2", "https://127.0.0.1:16611/readyz"],
                             capture_output=True).returncode != 0, "the API server is unreachable")
        time.sleep(5)
        status, body, headers, seconds = post_event(ingest, NEWCOMER)
        check(status == 503 and body.get("error", {}).get("code") == "auth_unavailable"
              and headers.get("Retry-After"),
              f"a token never reviewed is refused 503 auth_unavailable with Retry-After "
              f"(got {status} {body} Retry-After={headers.get('Retry-After')} after {seconds:.1f} s)")
        print(f"   the refusal's message: {body.get('error', {}).get('message')}")
        time.sleep(max(0.0, args.outage_seconds - (time.monotonic() - down_at)))

        print("== the API server back", flush=True)
        control_plane("up")
        publisher.phase = "after"
        time.sleep(10)
        publisher.stop.set()
        publisher.join()
        print("   answers by phase and status:", dict(sorted(publisher.answers.items(), key=str)))
        print("   slowest answer by phase (s):", {k: round(v, 3) for k, v in publisher.slowest.items()})
        refused = {k: v for k, v in publisher.answers.items() if k[1] != 202}
        check(not refused, f"every event published with the reviewed token was accepted, outage included ({refused})")
        check(publisher.answers[("outage", 202)] > 0, "events were accepted during the outage")
        check(dispatcher.poll() is None and controller.poll() is None, "neither process exited")

        accepted = set(publisher.accepted)
        check(len(accepted) == len(publisher.accepted), "every accepted event has its own id")

        def accounted():
            rows = {}
            for name in LOAD_ENDPOINTS:
                delivered = receiver.ids(name)
                dead = dead_letters(ingest, name)
                rows[name] = (delivered, dead)
            done = all(set(d) | set(x) == accepted and len(d) + len(x) == len(accepted) for d, x in rows.values())
            return rows if done else None

        rows = wait_for("every accepted event delivered or dead-lettered at each endpoint", 180, accounted)
        rows = rows or {name: (receiver.ids(name), dead_letters(ingest, name)) for name in LOAD_ENDPOINTS}
        print(f"   accepted: {len(accepted)} events")
        short = Counter(publisher.fanout[i] for i in accepted if publisher.fanout[i][1] != len(LOAD_ENDPOINTS))
        check(not short, f"every accepted event was routed to the {len(LOAD_ENDPOINTS)} endpoints "
                         f"(phase, deliveries answered: {dict(short)})")
        for name, (delivered, dead) in rows.items():
            twice = [i for i, n in Counter(delivered).items() if n > 1]
            unknown = set(delivered) - accepted
            print(f"   {name}: delivered {len(delivered)}, dead-lettered {len(dead)}")
            check(not twice and not unknown, f"{name}: nothing delivered twice ({len(twice)}) nor unaccepted ({len(unknown)})")
        check(all(len(rows[name][0]) == len(accepted) for name in ("ok-a", "ok-b", "flaky")),
              "ok-a, ok-b and flaky delivered everything")
        check(len(rows["mixed"][0]) > 0 and len(rows["mixed"][1]) > 0, "mixed both delivered and dead-lettered")

        def status_matches(name):
            # Every event type (the probe's and the WebhookEvents' too): this dispatcher sent them all.
            delivered, dead = receiver.count(name), len(dead_letters(ingest, name, None))
            raw = kubectl("get", "whep", name, "-n", NS, "-o", "jsonpath={.status.delivery}")
            stats = json.loads(raw or "{}")
            return (stats.get("totalDelivered") == delivered and stats.get("totalDeadLettered") == dead
                    and stats.get("pending") == 0) and stats

        for name in LOAD_ENDPOINTS:
            stats = wait_for(f"{name}'s status.delivery written back (delivered, dead-lettered, 0 pending)", 60,
                             lambda name=name: status_matches(name))
            if stats:
                print(f"   {name} status.delivery: delivered {stats['totalDelivered']}, dead-lettered "
                      f"{stats['totalDeadLettered']}, pending {stats['pending']}")

        check(len(receiver.ids("ok-a", "pitch.created")) == RESOURCE_EVENTS,
              f"the {RESOURCE_EVENTS} WebhookEvents delivered once each")
        wait_for("every WebhookEvent's status reaches phase Delivered", 60, lambda: kubectl(
            "get", "whev", "-n", NS, "-o", "jsonpath={.items[*].status.phase}").split() == ["Delivered"] * RESOURCE_EVENTS)

        kubectl("apply", "-f", "-", stdin=f"""apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {{name: after, namespace: {NS}}}
spec: {{url: "http://127.0.0.1:{receiver.port}/ok-b"}}
""")
        wait_for("the controller, never restarted, makes a new endpoint Ready", 60, lambda: endpoint_ready("after"))
        owners = Counter()
        for secret in json.loads(kubectl("get", "secrets", "-n", NS, "-o", "json"))["items"]:
            for owner in secret["metadata"].get("ownerReferences", []):
                if owner["kind"] == "WebhookEndpoint":
                    owners[owner["name"]] += 1
        check(owners == Counter({name: 1 for name in (*LOAD_ENDPOINTS, "after")}),
              f"one signing Secret per endpoint ({dict(owners)})")
        with open(os.path.join(work, "controller.log")) as log:
            check("campaigning again" in log.read(), "the controller lost its Lease in the outage and led again (its log)")

    dispatcher.terminate()
    dispatcher.wait(30)

    if "slow" in args.phases:
        print(f"== a slow API server: {args.slow_seconds} s added each way by a proxy", flush=True)
        proxy = SlowProxy(int(CP_ENV["WO_APISERVER_PORT"]), args.slow_seconds)
        slow_kubeconfig = os.path.join(work, "slow.kubeconfig")
        with open(KUBECONFIG) as direct, open(slow_kubeconfig, "w") as slow:
            slow.write(direct.read().replace(f"127.0.0.1:{CP_ENV['WO_APISERVER_PORT']}", f"127.0.0.1:{proxy.port}"))
        rates = {}
        for label, kubeconfig in (("direct", KUBECONFIG), ("slow", slow_kubeconfig), ("direct", KUBECONFIG),
                                  ("slow", slow_kubeconfig)):
            rate = throughput(work, label, kubeconfig, receiver, args.burst)
            check(rate is not None, f"{label}: every event delivered")
            rates.setdefault(label, []).append(rate or 0.0)
            print(f"   {label}: {rate or 0:.0f} deliveries/s (ok-a, ok-b, flaky)", flush=True)
        best = {label: max(values) for label, values in rates.items()}
        print(f"   deliveries/s, best of two: direct {best['direct']:.0f}, through the slow proxy {best['slow']:.0f} "
              f"(ratio {best['slow'] / max(best['direct'], 1):.2f})")

    if "postgres" in args.phases:
        postgres_phase(args, work, receiver, processes)


if __name__ == "__main__":
    main()
