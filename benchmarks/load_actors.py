"""The actors of benchmarks/load_faults.py: search clients that count failures by kind, a writer
adding products, and a stand-in server that can be killed and started again."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_test import (  # noqa: E402  (after the path above, as load_test itself does)
    Client,
    Query,
    _multipart,
)

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 30.0  # seconds one request may take
HEALTH_TIMEOUT = 300.0  # seconds a (re)started server may take to answer /api/health
BACKOFF = (0.05, 1.0)  # first and longest pause after a connection error
MAX_REQUESTS = 1_000_000  # per client or writer: the count bound besides the time bound
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Failure:
    kind: str  # "5xx", "http" (any other non-2xx), "conn" (no HTTP answer), "bad" (2xx that is not an answer)
    start: float  # time.monotonic() when the request began and when it failed
    end: float
    message: str
    source: str = "search"  # or "add"


def _backoff(attempt: int) -> float:
    return min(BACKOFF[1], BACKOFF[0] * 2**attempt)


class SearchClient(Client):
    """``load_test.Client`` (its queries, options and latency book-keeping) that survives the server
    going away: each failure is kept with its kind and times, and a connection error is followed by a
    new connection after a growing pause, until the deadline or ``stop``."""

    def __init__(self, port: int, queries: list[Query], offset: int, deadline: float, stop: threading.Event):
        super().__init__(HOST, port, queries, offset, MAX_REQUESTS, deadline)
        self.stop = stop
        self.failures: list[Failure] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
        refused = 0  # connection errors in a row
        for i in range(self.count):
            if time.monotonic() > self.deadline or self.stop.is_set():
                break
            q = self.queries[(self.offset + i) % len(self.queries)]
            t0 = time.monotonic()
            try:
                conn.request("POST", "/api/search", body=q.body, headers={"Content-Type": q.content_type})
                r = conn.getresponse()
                data = r.read()
                refused = 0
                ms = (time.monotonic() - t0) * 1e3
                if r.status >= 500:
                    self.failures.append(
                        Failure("5xx", t0, time.monotonic(), f"{q.option}: HTTP {r.status} {data[:200]!r}")
                    )
                elif r.status != 200:
                    self.failures.append(
                        Failure("http", t0, time.monotonic(), f"{q.option}: HTTP {r.status} {data[:200]!r}")
                    )
                elif "results" not in json.loads(data):
                    self.failures.append(Failure("bad", t0, time.monotonic(), f"{q.option}: no results field"))
                else:
                    self.latency[q.option].append(ms)
            except CONNECTION_ERRORS as exc:
                self.failures.append(Failure("conn", t0, time.monotonic(), f"{q.option}: {type(exc).__name__}: {exc}"))
                conn.close()
                self.stop.wait(_backoff(refused))
                refused += 1
                conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
            except ValueError as exc:  # a 200 whose body is not JSON
                self.failures.append(Failure("bad", t0, time.monotonic(), f"{q.option}: {exc}"))
            self.sent += 1
        conn.close()


@dataclass(frozen=True)
class Photo:
    image: bytes
    fields: dict[str, str]  # title, category_path, price, category


def load_photos(dump: Path, skip: int, limit: int) -> list[Photo]:
    """Rows ``skip`` .. ``skip + limit`` of the dump (not in the served index): the writer's products."""
    photos = []
    with dump.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < skip:
                continue
            if len(photos) >= limit:
                break
            row = json.loads(line)
            fields = {"title": row["title"], "category_path": row["category_path"], "price": f"{row['price']:g}"}
            if (row.get("attributes") or {}).get("category"):
                fields["category"] = row["attributes"]["category"]
            photos.append(Photo((dump.parent / row["image"]).read_bytes(), fields))
    if not photos:
        raise SystemExit(f"{dump}: no rows after the first {skip} for the writer")
    return photos


class Writer(threading.Thread):
    """Adds products one after another through ``POST /api/products``, each under a new id, until the
    deadline or ``stop``. ``acked`` holds every id answered 201 (with the time of the answer);
    ``unacked`` every id sent that got no 201 (an add cut by the kill may have landed or not)."""

    def __init__(self, port: int, token: str, photos: list[Photo], tag: str, deadline: float, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.token, self.photos, self.tag = port, token, photos, tag
        self.deadline, self.stop = deadline, stop
        self.acked: dict[str, float] = {}
        self.unacked: list[str] = []
        self.failures: list[Failure] = []
        self.latency: list[float] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
        refused = 0
        for i in range(MAX_REQUESTS):
            if time.monotonic() > self.deadline or self.stop.is_set():
                break
            photo = self.photos[i % len(self.photos)]
            pid = f"lf-{self.tag}-{i:06d}"
            body, ctype = _multipart({"id": pid, **photo.fields}, photo.image)
            headers = {"Content-Type": ctype, "Authorization": f"Bearer {self.token}"}
            t0 = time.monotonic()
            try:
                conn.request("POST", "/api/products", body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                refused = 0
                if r.status == 201 and json.loads(data).get("id") == pid:
                    self.acked[pid] = time.monotonic()
                    self.latency.append((time.monotonic() - t0) * 1e3)
                    continue
                self.unacked.append(pid)
                kind = "5xx" if r.status >= 500 else "http" if r.status != 201 else "bad"
                self.failures.append(
                    Failure(kind, t0, time.monotonic(), f"add {pid}: HTTP {r.status} {data[:200]!r}", "add")
                )
            except CONNECTION_ERRORS as exc:
                self.unacked.append(pid)
                self.failures.append(
                    Failure("conn", t0, time.monotonic(), f"add {pid}: {type(exc).__name__}: {exc}", "add")
                )
                conn.close()
                self.stop.wait(_backoff(refused))
                refused += 1
                conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            except ValueError as exc:
                self.unacked.append(pid)
                self.failures.append(Failure("bad", t0, time.monotonic(), f"add {pid}: {exc}", "add"))
        conn.close()


class RestartFailed(RuntimeError):
    pass


@dataclass
class Server:
    """The stand-in server as a subprocess on a fixed loopback port; its output goes to ``log``."""

    dump: Path
    index: Path
    n: int
    port: int
    token: str
    threads: int
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n===== start {self.starts} =====\n")
            fh.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.standin", str(self.dump), str(self.index)]
                + ["--n", str(self.n), "--port", str(self.port), "--token", self.token, "--threads", str(self.threads)],
                cwd=ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> float:
        """Polls /api/health until it answers 200 (returns that moment); raises RestartFailed when the
        process exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                try:
                    conn.request("GET", "/api/health")
                    r = conn.getresponse()
                    r.read()
                    if r.status == 200:
                        return time.monotonic()
                finally:
                    conn.close()
            except CONNECTION_ERRORS:
                pass
            if self.proc.poll() is not None:
                raise RestartFailed(f"the server exited with {self.proc.returncode} before answering /api/health")
            time.sleep(0.02)
        raise RestartFailed(f"the server did not answer /api/health within {timeout:.0f} s")

    def kill(self) -> float:
        """SIGKILL; returns the moment it was sent."""
        t = time.monotonic()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return t

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
