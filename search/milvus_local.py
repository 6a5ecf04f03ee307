"""A Milvus standalone server on this machine, from PyPI's ``milvus`` package (no Docker needed).

The package (2.3.5) carries Milvus' own standalone binary with an embedded etcd and local
storage; ``local_milvus`` starts it in a folder of its own on a free port, waits on its health
check and stops it on exit. The tests and benchmarks use it; a shop with one machine can too.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_milvus(base_dir: str | Path, *, port: int | None = None, timeout_s: float = 120) -> Iterator[str]:
    """Start Milvus with its data under ``base_dir``; yields its URI, stops it on exit.

    Raises:
        ImportError: the ``milvus`` package is not installed.
        RuntimeError: the server exited or did not answer its health check within ``timeout_s``.
    """
    try:
        from milvus import MilvusServer
    except ImportError as exc:
        raise ImportError("a local Milvus server needs the milvus package: pip install 'milvus==2.3.5'") from exc
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    server = MilvusServer(wait_for_started=False)
    server.set_base_dir(str(base_dir))
    server.listen_port = port or _free_port()
    t0 = time.perf_counter()
    server.start()
    try:
        health = f"http://127.0.0.1:{server.webservice_port}/healthz"
        while True:
            if server.server_proc.poll() is not None:
                raise RuntimeError(f"Milvus exited with {server.server_proc.returncode}: see {base_dir}/logs")
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if b"OK" in resp.read():
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"Milvus did not start within {timeout_s:g}s: see {base_dir}/logs")
            time.sleep(0.2)
        logger.info("Milvus started in %.1fs on port %d", time.perf_counter() - t0, server.listen_port)
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()
