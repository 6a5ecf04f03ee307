"""Load with faults: searches and re-index writes against a server that is killed midway and restarted.

One invocation makes two runs of the same length against the stand-in server
(``python -m tests.standin DUMP INDEX``: the real ``SearchEngine`` over an LMDB store,
with model stand-ins), each on a fresh index of a small synthetic catalogue (``catalogues.synth``):

* ``baseline``: 16 keep-alive clients search for ``--seconds``, cycling the three options
  (``benchmarks/load_test.py``'s queries and client), while one writer adds products through
  ``POST /api/products`` (Bearer token) the whole time, counting every 201 with its id;
* ``kill``: the same, but at half time the server is killed with SIGKILL and started again on the
  same port and index directory. Clients and writer retry after connection errors (with a short
  backoff) and go on; a connection error whose request overlaps the outage (kill to the first
  healthy ``/api/health``) is counted apart from the HTTP errors and from connection errors at
  any other time.

At the end of each run every acknowledged product is read back (``GET /api/products/{id}`` must
answer 200: any other answer is a product lost), and every add that got no 201 is looked up too
(an add in flight at the kill may have landed or not: reported, not failed). The two runs are
printed side by side. Exits 1 when a product was lost or any request got a 5xx (or the read-back
could not finish), 2 when the server could not be started again (its log's tail is printed).

Loopback only; every loop is bounded in count and time.

    python benchmarks/load_faults.py [--seconds 60] [--clients 16] [--products 200]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_actors import (  # noqa: E402
    CONNECTION_ERRORS,
    HOST,
    REQUEST_TIMEOUT,
    Failure,
    Photo,
    RestartFailed,
    SearchClient,
    Server,
    Writer,
    _backoff,
    load_photos,
)
from benchmarks.load_test import (  # noqa: E402  (after the path above, as load_test itself does)
    OPTIONS,
    Client,
    Query,
    _free_port,
    _get_json,
    load_queries,
)


@dataclass
class Result:
    name: str
    elapsed: float = 0.0
    latency: list[float] = field(default_factory=list)
    add_latency: list[float] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    kill_at: float | None = None
    healthy_at: float | None = None
    acked: dict[str, float] = field(default_factory=dict)
    unacked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unchecked: int = 0
    unacked_present: list[str] = field(default_factory=list)
    products_end: int | None = None
    products_start: int = 0
    restart_error: str | None = None

    def in_outage(self, f: Failure) -> bool:
        return self.kill_at is not None and f.end >= self.kill_at and f.start <= (self.healthy_at or float("inf"))

    def count(self, kind: str, outage: bool | None = None, source: str | None = None) -> int:
        return sum(
            f.kind == kind and (outage is None or self.in_outage(f) == outage) and source in (None, f.source)
            for f in self.failures
        )


def read_back(port: int, ids: list[str], deadline: float) -> tuple[list[str], list[str], int]:
    """GET /api/products/{id} for each id, one keep-alive connection: (found, not found, not checked)."""
    found, missing = [], []
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        for i, pid in enumerate(ids):
            if time.monotonic() > deadline:
                return found, missing, len(ids) - i
            for attempt in range(3):  # a dropped keep-alive connection is not a missing product
                try:
                    conn.request("GET", f"/api/products/{pid}")
                    r = conn.getresponse()
                    data = r.read()
                    break
                except CONNECTION_ERRORS:
                    conn.close()
                    time.sleep(_backoff(attempt))
                    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
            else:
                return found, missing, len(ids) - i
            ok = r.status == 200 and json.loads(data).get("id") == pid
            (found if ok else missing).append(pid)
    finally:
        conn.close()
    return found, missing, 0


def one_run(name: str, args, dump: Path, queries: list[Query], photos: list[Photo], work: Path, kill: bool) -> Result:
    res = Result(name)
    token = secrets.token_urlsafe(16)
    index, log = work / f"index-{name}", work / f"server-{name}.log"
    server = Server(dump, index, args.products, _free_port(), token, args.server_threads, log)
    server.start()
    try:
        server.wait_healthy()
        res.products_start = _get_json(HOST, server.port, "/api/health")["products"]
        for q in {q.option: q for q in queries}.values():  # one of each option first: start-up costs stay out
            Client(HOST, server.port, [q], 0, 1, time.monotonic() + 60).run()
        print(f"[{name}] serving {res.products_start} products on port {server.port}", flush=True)

        stop = threading.Event()
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        clients = [SearchClient(server.port, queries, i * 7, deadline, stop) for i in range(args.clients)]
        writer = Writer(server.port, token, photos, name, deadline, stop)
        for t in [*clients, writer]:
            t.start()
        if kill:
            time.sleep(max(0.0, t0 + args.seconds / 2 - time.monotonic()))
            res.kill_at = server.kill()
            print(f"[{name}] SIGKILL at {res.kill_at - t0:.1f} s; restarting on port {server.port}", flush=True)
            server.start()
            try:
                res.healthy_at = server.wait_healthy()
                print(f"[{name}] healthy again after {res.healthy_at - res.kill_at:.2f} s", flush=True)
            except RestartFailed as exc:
                res.restart_error = f"{exc}\n--- server log (tail) ---\n{server.log_tail()}"
                stop.set()
        for t in [*clients, writer]:
            t.join(timeout=max(1.0, deadline - time.monotonic()) + REQUEST_TIMEOUT + 5)
        res.elapsed = time.monotonic() - t0
        res.latency = [ms for c in clients for o in OPTIONS for ms in c.latency[o]]
        res.add_latency = writer.latency
        res.failures = [f for c in clients for f in c.failures] + writer.failures
        res.acked, res.unacked = dict(writer.acked), list(writer.unacked)
        if res.restart_error:
            return res

        verify_deadline = time.monotonic() + args.verify_seconds
        _found, res.lost, res.unchecked = read_back(server.port, list(res.acked), verify_deadline)
        present, _absent, unchecked = read_back(server.port, res.unacked, verify_deadline)
        res.unacked_present, res.unchecked = present, res.unchecked + unchecked
        res.products_end = _get_json(HOST, server.port, "/api/health")["products"]
    finally:
        server.stop()
    return res


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "-"


def table(runs: list[Result]) -> str:
    def row(label: str, cells: list[str]) -> str:
        return f"{label:<46}" + "".join(f"{c:>16}" for c in cells)

    def each(fn) -> list[str]:
        return [str(fn(r)) for r in runs]

    def before_kill(r: Result) -> str:
        return "-" if r.kill_at is None else str(sum(t < r.kill_at for t in r.acked.values()))

    lines = [
        row("", [r.name for r in runs]),
        row("seconds of load", each(lambda r: f"{r.elapsed:.1f}")),
        row("searches served (200 with results)", each(lambda r: len(r.latency))),
        row("throughput, searches/s", each(lambda r: f"{len(r.latency) / r.elapsed:.1f}" if r.elapsed else "-")),
        row("search latency p50 ms", each(lambda r: _pct(r.latency, 50))),
        row("search latency p99 ms", each(lambda r: _pct(r.latency, 99))),
        row("search latency max ms", each(lambda r: f"{max(r.latency):.1f}" if r.latency else "-")),
        row("errors: HTTP 5xx", each(lambda r: r.count("5xx"))),
        row("errors: other HTTP (4xx)", each(lambda r: r.count("http"))),
        row("errors: 2xx that is no answer", each(lambda r: r.count("bad"))),
        row("errors: connection, during the outage", each(lambda r: r.count("conn", True) if r.kill_at else "-")),
        row("  searches / adds", each(lambda r: f"{r.count('conn', True, 'search')} / {r.count('conn', True, 'add')}"
                                    if r.kill_at else "-")),
        row("errors: connection, outside the outage", each(lambda r: r.count("conn", False))),
        row("outage s (SIGKILL -> first healthy answer)",
            each(lambda r: f"{r.healthy_at - r.kill_at:.2f}" if r.healthy_at else "-" if r.kill_at is None else "no restart")),
        row("adds acknowledged (201)", each(lambda r: len(r.acked))),
        row("  of which before the kill", each(before_kill)),
        row("add latency p50 / p99 ms", each(lambda r: f"{_pct(r.add_latency, 50)} / {_pct(r.add_latency, 99)}")),
        row("adds not acknowledged", each(lambda r: len(r.unacked))),
        row("  of which present anyway", each(lambda r: len(r.unacked_present))),
        row("PRODUCTS LOST (201, then no 200 on GET)", each(lambda r: len(r.lost))),
        row("acknowledged ids not checked (time)", each(lambda r: r.unchecked)),
        row("products served: start -> end", each(lambda r: f"{r.products_start} -> {r.products_end}")),
        row("  expected end (start + 201s + present)",
            each(lambda r: r.products_start + len(r.acked) + len(r.unacked_present))),
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60, help="length of each run (default 60)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--products", type=int, default=200, help="products indexed at start (default 200)")
    p.add_argument("--photos", type=int, default=40, help="distinct query photos (default 40)")
    p.add_argument("--writer-photos", type=int, default=60, help="distinct photos the writer cycles (default 60)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--server-threads", type=int, default=4)
    p.add_argument("--verify-seconds", type=float, default=120, help="time allowed to read every product back")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["baseline", "kill"], help="make one run only")
    p.add_argument("--keep", type=Path, help="keep the catalogue, indexes and server logs in this folder")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1 or args.products < 1 or args.photos < 1 or args.writer_photos < 1:
        raise SystemExit("--seconds, --clients, --products, --photos and --writer-photos must be positive")

    from catalogues.synth import synthesize

    work = Path(tempfile.mkdtemp(prefix="load-faults-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        dump = synthesize(work / "catalogue", args.products + args.writer_photos, args.seed, progress=False)
        queries = load_queries(dump, limit=args.photos, k=args.k)
        photos = load_photos(dump, args.products, args.writer_photos)
        print(
            f"load with faults: {args.clients} search clients + 1 writer, {args.seconds:g} s per run, "
            f"{args.products} products indexed, {len(queries)} distinct queries, work in {work}",
            flush=True,
        )
        plan = [("baseline", False), ("kill", True)]
        runs = [one_run(n, args, dump, queries, photos, work, kill) for n, kill in plan if args.only in (None, n)]
    finally:
        if args.keep is None:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)

    print()
    print(table(runs))
    status = 0
    for r in runs:
        for kind in ("5xx", "http", "bad"):
            for f in [f for f in r.failures if f.kind == kind][:5]:
                print(f"  [{r.name}] {kind}: {f.message}")
        if r.lost:
            print(f"  [{r.name}] lost: {', '.join(r.lost[:20])}")
        if r.unacked_present:
            print(f"  [{r.name}] not acknowledged but present: {', '.join(r.unacked_present[:20])}")
        if r.restart_error:
            print(f"\n[{r.name}] THE SERVER COULD NOT BE STARTED AGAIN ON THE SAME INDEX: {r.restart_error}")
            status = 2
        elif r.lost or r.count("5xx") or r.unchecked:
            status = max(status, 1)
    print(f"exit {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
