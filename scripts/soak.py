#!/usr/bin/env python3
"""A soak test: hours of steady load, sampled every minute.

On a control plane of its own, the controller and one dispatcher (SQLite) as local processes and a
loopback receiver: 100 endpoints, one subscription each; 90 answer at once, 5 always answer 500
(retries, open circuits, dead letters), 5 answer after 2 s. A publisher sends `--rate` events/s
(300 by default) spread over them through `events:batch`. Every 10 minutes the signing Secrets of
ten endpoints are rotated; every 15 minutes a WebhookReplay redelivers a failing endpoint's dead
letters. Every minute it samples the dispatcher's RSS and open file descriptors, the store's size on
disk, publish → receipt latency at the 90 endpoints that answer at once (p50, p99 over the
minute), and the accepted, delivered and
dead-lettered counts.

It writes the samples to OUT.csv and a plot of them to OUT.svg, and prints a Markdown table for
docs/benchmarks.md. Not in CI: run once, on a quiet machine.
  scripts/soak.py [--minutes 60] [--rate 300] [--out docs/images/soak]
                  [--binary target/release/webhook-operator] [--retention 10m]
"""
import argparse
import csv
import http.server
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402  (the control plane, processes and helpers of scripts/faults.py)

ENDPOINTS = 100
FAILING = {f"e{i:03}" for i in range(90, 95)}
SLOW = {f"e{i:03}" for i in range(95, 100)}


class Receiver:
    """Answers 200 (500 on failing endpoints, after 2 s on slow ones) and keeps each delivery's
    publish → receipt latency from the `sent` timestamp in its data (not of the slow endpoints:
    their 2 s would be the p99)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.delivered = 0
        self.received = {}  # endpoint → Counter of the events' `n` answered 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                name = self.path.strip("/")
                if name in SLOW:
                    time.sleep(2)
                status = 500 if name in FAILING else 200
                if status == 200:
                    try:
                        data = json.loads(body)["data"]
                        sent, n = data["sent"], data["n"]
                    except (ValueError, KeyError, TypeError):
                        sent = n = None
                    with receiver.lock:
                        receiver.delivered += 1
                        receiver.received.setdefault(name, Counter())[n] += 1
                        if sent is not None and name not in SLOW:
                            receiver.latencies.append(time.time() - sent)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = faults.Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        """(delivered so far, latencies since the last take)."""
        with self.lock:
            latencies, self.latencies = self.latencies, []
            return self.delivered, latencies


class Publisher(threading.Thread):
    """`rate` events/s in batches ten times a second, round-robin over the endpoints' types."""

    def __init__(self, port, rate):
        super().__init__(daemon=True)
        self.port, self.rate = port, rate
        self.stop = threading.Event()
        self.accepted = 0
        self.refused = 0
        self.accepted_ids = {}  # endpoint → the `n` of its events answered 202

    def run(self):
        sent, next_at = 0, time.monotonic()
        per_tick = max(1, self.rate // 10)
        while not self.stop.is_set():
            events = [{"type": f"soak.e{(sent + i) % ENDPOINTS:03}", "data": {"sent": time.time(), "n": sent + i}}
                      for i in range(per_tick)]
            sent += per_tick
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/namespaces/{faults.NS}/events:batch",
                data=json.dumps({"events": events}).encode(), method="POST",
                headers={"Authorization": f"Bearer {faults.ADMIN}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    ok = answer.status == 202
            except OSError:
                ok = False
            if ok:
                self.accepted += per_tick
                for event in events:
                    self.accepted_ids.setdefault(event["type"][len("soak."):], set()).add(event["data"]["n"])
            else:
                self.refused += per_tick
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.monotonic()))


def process_sample(pid):
    """(RSS MiB, open file descriptors) of a process."""
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def store_mib(path):
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)) / 2**20


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def svg_plot(rows, path):
    """One small line chart per figure, stacked: a plot with no dependency to install."""
    figures = [("rss_mib", "dispatcher RSS (MiB)"), ("fds", "open file descriptors"),
               ("store_mib", "store on disk (MiB)"), ("p50_ms", "p50 publish → receipt (ms)"),
               ("p99_ms", "p99 publish → receipt (ms)"), ("delivered_per_s", "deliveries/s")]
    width, height, pad = 640, 120, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(figures) * height}" '
             f'font-family="sans-serif" font-size="11">']
    for index, (key, title) in enumerate(figures):
        top = index * height
        values = [float(row[key]) for row in rows if row[key] == row[key]]
        high = max(values + [1e-9]) * 1.1
        points = " ".join(
            f"{pad + (width - 2 * pad) * i / max(1, len(rows) - 1):.1f},"
            f"{top + height - 20 - (height - 40) * float(row[key]) / high:.1f}"
            for i, row in enumerate(rows) if row[key] == row[key])
        parts += [f'<text x="{pad}" y="{top + 14}">{title}: last {values[-1] if values else 0:.1f}, '
                  f'max {max(values + [0]):.1f}</text>',
                  f'<line x1="{pad}" y1="{top + height - 20}" x2="{width - pad}" y2="{top + height - 20}" '
                  f'stroke="#999"/>',
                  f'<text x="{width - pad}" y="{top + height - 6}" text-anchor="end">minute {len(rows)}</text>',
                  f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{points}"/>']
    parts.append("</svg>")
    with open(path, "w") as out:
        out.write("\n".join(parts) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=int, default=300, help="events/s")
    parser.add_argument("--out", default=os.path.join(faults.ROOT, "docs/images/soak"))
    parser.add_argument("--binary", default=os.path.join(faults.ROOT, "target/release/webhook-operator"))
    parser.add_argument("--retention", default="10m",
                        help="the dispatcher's --retention: short, so an hour shows the store's size level off")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} is missing: cargo build --release --bin webhook-operator")
    faults.BIN = args.binary
    faults.NS = "soak"
    faults.CP_ENV = dict(os.environ, WO_CONTROL_PLANE_DIR="/tmp/webhook-operator-cp-soak", WO_APISERVER_PORT="16621",
                         WO_ETCD_PORT="23830", WO_KCM_PORT="10487")
    work = faults.on_own_control_plane("webhook-operator-soak.",
                                       lambda work, processes: soak(args, work, processes))
    print(f"logs in {work}")


def soak(args, work, processes):
    kubectl = faults.kubectl
    kubectl("apply", "--server-side", "-f", os.path.join(faults.ROOT, "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    kubectl("create", "namespace", faults.NS)
    receiver = Receiver()
    ingest, dmetrics, cmetrics = faults.free_port(), faults.free_port(), faults.free_port()
    processes.append(faults.start_controller(work, cmetrics, "soak"))
    dispatcher = faults.start_dispatcher(work, "dispatcher", faults.KUBECONFIG, ingest, dmetrics,
                                         ["--retention", args.retention])
    processes.append(dispatcher)
    faults.wait_for("dispatcher ready", 60, lambda: faults.ready(dmetrics))
    manifests = []
    for i in range(ENDPOINTS):
        name = f"e{i:03}"
        manifests.append(f"""---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookEndpoint
metadata: {{name: {name}, namespace: {faults.NS}}}
spec:
  url: http://127.0.0.1:{receiver.port}/{name}
  retryPolicy: {{baseDelay: 1s, maxDelay: 30s, maxAttempts: 4}}
  rateLimit: {{requestsPerMinute: 60000, burst: 1000}}
  circuitBreaker: {{failureThreshold: 20, openDuration: 30s}}
---
apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookSubscription
metadata: {{name: {name}, namespace: {faults.NS}}}
spec: {{endpointRef: {{name: {name}}}, eventTypes: ["soak.{name}"]}}
""")
    kubectl("apply", "-f", "-", stdin="".join(manifests))
    faults.wait_for("every endpoint Ready", 180, lambda: kubectl(
        "get", "whep", "-n", faults.NS, "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"
    ).split() == ["True"] * ENDPOINTS)

    publisher = Publisher(ingest, args.rate)
    publisher.start()
    store = os.path.join(work, "dispatcher.db")
    rows, last_delivered, started = [], 0, time.monotonic()
    soak_started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for minute in range(1, args.minutes + 1):
        time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
        if minute % 10 == 0:
            for i in range(minute // 10 % 9 * 10, minute // 10 % 9 * 10 + 10):
                kubectl("annotate", "--overwrite", "whep", f"e{i:03}", "-n", faults.NS,
                        f"webhooks.pitchey.io/rotate-secret=soak-{minute}")
        if minute % 15 == 0:
            failing = sorted(FAILING)[minute // 15 % len(FAILING)]
            kubectl("apply", "-f", "-", stdin=f"""apiVersion: webhooks.pitchey.io/v1alpha1
kind: WebhookReplay
metadata: {{name: replay-{minute}, namespace: {faults.NS}}}
spec: {{endpointRef: {{name: {failing}}}, from: "{soak_started}", outcomes: [DeadLettered]}}
""")
        rss, fds = process_sample(dispatcher.pid)
        delivered, latencies = receiver.take()
        row = {"minute": minute, "rss_mib": round(rss, 1), "fds": fds, "store_mib": round(store_mib(store), 1),
               "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
               "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
               "delivered_per_s": round((delivered - last_delivered) / 60, 1),
               "accepted": publisher.accepted, "refused": publisher.refused, "delivered": delivered}
        last_delivered = delivered
        rows.append(row)
        print(json.dumps(row), flush=True)
        if dispatcher.poll() is not None:
            print("the dispatcher exited", flush=True)
            break
    publisher.stop.set()
    publisher.join()
    lost, twice = account(receiver, publisher)


    with open(args.out + ".csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    svg_plot(rows, args.out + ".svg")
    print("\n| minute | RSS MiB | fds | store MiB | p50 ms | p99 ms | deliveries/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    picked = rows[:: max(1, len(rows) // 12)]
    if picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    for row in picked:
        print(f"| {row['minute']} | {row['rss_mib']} | {row['fds']} | {row['store_mib']} | {row['p50_ms']} | "
              f"{row['p99_ms']} | {row['delivered_per_s']} |")
    print(f"\naccepted {publisher.accepted}, refused {publisher.refused}, delivered {rows[-1]['delivered']}; "
          f"median RSS {statistics.median(r['rss_mib'] for r in rows)} MiB")
    print(f"accounting, the {ENDPOINTS - len(FAILING)} endpoints that answer 200: {lost} accepted events never "
          f"received, {twice} received more than once")


def account(receiver, publisher):
    """Waits up to 3 minutes for every event accepted for an endpoint that answers 200 to arrive
    there; (events never received, events received more than once)."""
    def missing():
        with receiver.lock:
            return sum(len(ids - set(receiver.received.get(name, ())))
                       for name, ids in publisher.accepted_ids.items() if name not in FAILING)
    deadline = time.monotonic() + 180
    while missing() and time.monotonic() < deadline:
        time.sleep(2)
    with receiver.lock:
        twice = sum(1 for counts in receiver.received.values() for count in counts.values() if count > 1)
    return missing(), twice


if __name__ == "__main__":
    main()
