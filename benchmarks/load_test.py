"""Load test of a served index: concurrent clients sending searches over HTTP, on this machine only.

Each client holds one keep-alive connection and sends its searches one after another, cycling
through the three options (auto, guided with the product's category, rectangle with its box) over
query photos taken from a product dump. Prints the error count, the throughput and latency
p50/p99 per option, beside the server's own figures from /api/stats. Bounded in count
(--clients x --per-client) and in time (--time-limit); exits 1 when any search failed.

Usage:
    python benchmarks/load_test.py --index .fashion-search/demo/index   # starts `fashion-search serve`, stops it after
    python benchmarks/load_test.py --url http://127.0.0.1:8000/ --queries DUMP.jsonl
Defaults: 16 clients x 1,000 searches, 20 results each, at most 900 s.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTIONS = ("auto", "guided", "rectangle")


@dataclass(frozen=True)
class Query:
    option: str
    body: bytes
    content_type: str


def _multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="query.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
    )
    out.write(image)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def load_queries(dump: Path, *, limit: int, k: int) -> list[Query]:
    """Up to ``limit`` photos of the dump, each as an auto, a guided and a rectangle search."""
    from PIL import Image

    from foundation.text import category_from_text

    queries: list[Query] = []
    with dump.open(encoding="utf-8") as fh:
        for line in fh:
            if len(queries) >= 3 * limit:
                break
            row = json.loads(line)
            path = Path(row["image"]) if Path(row["image"]).is_absolute() else dump.parent / row["image"]
            if not path.is_file():
                continue
            image = path.read_bytes()
            category = (row.get("attributes") or {}).get("category") or category_from_text(
                row.get("title"), row.get("category_path")
            )
            box = next((b[:4] for b in row.get("boxes") or [] if len(b) == 5 and b[4] == category), None)
            if box is None:  # the middle of the photo
                w, h = Image.open(path).size
                box = [w * 0.1, h * 0.1, w * 0.9, h * 0.9]
            forms = [{"option": "auto"}, {"option": "rectangle", "box": ",".join(f"{v:g}" for v in box)}]
            if category:
                forms.insert(1, {"option": "guided", "category": category})
            for form in forms:
                body, ctype = _multipart({**form, "k": str(k)}, image)
                queries.append(Query(form["option"], body, ctype))
    if not queries:
        raise SystemExit(f"no usable query photos in {dump}")
    return queries


def _check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise SystemExit(f"{url}: this load test only runs against http on this machine (127.0.0.1, ::1, localhost)")
    return host, parts.port or 80


def _get_json(host: str, port: int, path: str, timeout: float = 5) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return json.loads(r.read())
    finally:
        conn.close()


class Client(threading.Thread):
    def __init__(self, host: str, port: int, queries: list[Query], offset: int, count: int, deadline: float):
        super().__init__(daemon=True)
        self.host, self.port, self.queries = host, port, queries
        self.offset, self.count, self.deadline = offset, count, deadline
        self.latency: dict[str, list[float]] = {o: [] for o in OPTIONS}
        self.errors: list[str] = []
        self.sent = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        for i in range(self.count):
            if time.monotonic() > self.deadline:
                break
            q = self.queries[(self.offset + i) % len(self.queries)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body=q.body, headers={"Content-Type": q.content_type})
                r = conn.getresponse()
                data = r.read()
                ms = (time.perf_counter() - t0) * 1e3
                if r.status != 200:
                    self.errors.append(f"{q.option}: HTTP {r.status} {data[:200]!r}")
                elif "results" not in json.loads(data):
                    self.errors.append(f"{q.option}: no results field")
                else:
                    self.latency[q.option].append(ms)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.errors.append(f"{q.option}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.sent += 1
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", str(index), "--port", str(port), "--threads", str(threads)],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            _get_json("127.0.0.1", port, "/api/health", timeout=2)
            return proc, url
        except OSError:
            try:
                proc.wait(timeout=0.2)  # the pause between polls, and a check that it still runs
                raise SystemExit(f"the server exited with {proc.returncode}")
            except subprocess.TimeoutExpired:
                pass
    proc.terminate()
    raise SystemExit("the server did not answer /api/health within 300 s")


def _row(name: str, ms: list[float]) -> str:
    if not ms:
        return f"{name:<10} {0:>7}"
    a = np.asarray(ms)
    return f"{name:<10} {a.size:>7} {np.percentile(a, 50):>8.1f} {np.percentile(a, 99):>8.1f} {a.max():>8.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000/")
    where.add_argument("--index", type=Path, help="an index directory: serve it for the test, on a free loopback port")
    p.add_argument(
        "--queries",
        type=Path,
        help="product dump whose photos are the queries "
        "(default with --index: the demo catalogue beside it, ../catalogue/products.jsonl)",
    )
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--per-client", type=int, default=1000, help="searches each client sends (default 1000)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--photos", type=int, default=100, help="distinct query photos (default 100)")
    p.add_argument("--time-limit", type=float, default=900, help="stop sending after this many seconds (default 900)")
    p.add_argument("--server-threads", type=int, default=4, help="with --index: waitress threads (default 4)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.per_client < 1 or args.time_limit <= 0:
        raise SystemExit("--clients, --per-client and --time-limit must be positive")

    dump = args.queries or (args.index.parent / "catalogue" / "products.jsonl" if args.index else None)
    if dump is None or not dump.is_file():
        raise SystemExit(f"no query dump at {dump}: give --queries DUMP.jsonl")
    queries = load_queries(dump, limit=args.photos, k=args.k)

    proc = None
    url = args.url
    if args.index:
        proc, url = start_server(args.index, args.server_threads)
    try:
        host, port = _check_loopback(url)
        health = _get_json(host, port, "/api/health")
        print(
            f"load test: {args.clients} clients x {args.per_client} searches (k={args.k}) against {url} "
            f"({health['products']} products), {len(queries)} distinct queries from {dump}",
            flush=True,
        )
        for q in queries[:3]:  # one of each option first, so model start-up costs stay out of the figures
            Client(host, port, [q], 0, 1, time.monotonic() + 120).run()
        t0 = time.monotonic()
        clients = [
            Client(host, port, queries, i * 7, args.per_client, t0 + args.time_limit) for i in range(args.clients)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.monotonic() - t0
        stats = _get_json(host, port, "/api/stats")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    sent = sum(c.sent for c in clients)
    errors = [e for c in clients for e in c.errors]
    planned = args.clients * args.per_client
    print(
        f"searches: {sent} of {planned} in {elapsed:.1f} s" + (" (stopped by --time-limit)" if sent < planned else "")
    )
    print(f"throughput: {sent / elapsed:.1f} searches/s")
    print(f"errors: {len(errors)}")
    for e in errors[:10]:
        print(f"  {e}")
    print(f"{'option':<10} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   (client side, HTTP round trip)")
    for option in OPTIONS:
        print(_row(option, [ms for c in clients for ms in c.latency[option]]))
    print(_row("all", [ms for c in clients for o in OPTIONS for ms in c.latency[o]]))
    server = stats.get("server", {}).get("searches", {})
    if server:
        print(
            "server side, engine only (latest window):  "
            + ", ".join(f"{o} p50 {s['p50_ms']:.1f} / p99 {s['p99_ms']:.1f} ms" for o, s in server.items())
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
