"""The Flask application factory and the production server that runs it.

``create_app(config)`` takes a search engine (``ENGINE``) or an index directory (``INDEX``) that it
opens once, at start-up; requests never load models or read the index from disk. ``serve`` runs
the application under waitress, bound to the loopback interface unless told otherwise.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from search.protocol import ENGINE_METHODS, Engine

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
LATENCY_WINDOW = 2000  # searches per option kept for the latency figures in /api/stats

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class _JSON(DefaultJSONProvider):
    """Flask's JSON, plus the NumPy scalars and arrays an engine may hand back."""

    @staticmethod
    def default(o):
        if isinstance(o, (np.generic, np.ndarray)):
            return o.tolist()
        return DefaultJSONProvider.default(o)


class ServerStats:
    """Search latencies per option (a window of the latest) and refused requests by status."""

    def __init__(self, window: int = LATENCY_WINDOW):
        self._lock = threading.Lock()
        self._latency: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=window))
        self._count: collections.Counter = collections.Counter()
        self._errors: collections.Counter = collections.Counter()
        self.started = time.time()

    def search(self, option: str, ms: float) -> None:
        with self._lock:
            self._latency[option].append(ms)
            self._count[option] += 1

    def error(self, status: int) -> None:
        with self._lock:
            self._errors[str(status)] += 1

    def summary(self) -> dict:
        with self._lock:
            searches = {}
            for option, window in self._latency.items():
                ms = np.fromiter(window, float)
                searches[option] = {
                    "count": self._count[option],
                    "p50_ms": round(float(np.percentile(ms, 50)), 2),
                    "p99_ms": round(float(np.percentile(ms, 99)), 2),
                    "window": len(ms),
                }
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "searches": searches,
                "refused": dict(self._errors),
            }


@dataclass
class AppState:
    engine: Engine
    categories: tuple[str, ...]
    token: str | None
    stats: ServerStats = field(default_factory=ServerStats)


def create_app(config: Mapping | None = None) -> Flask:
    """The web application.

    Config keys: ``ENGINE`` (a ``search.protocol.Engine``: a ``SearchEngine``, or an object with its
    methods) or ``INDEX`` (an index directory, opened with ``SearchEngine.open`` on ``DEVICE``,
    default cpu); ``TOKEN`` (needed by the product update endpoints; without it they are disabled);
    ``MAX_CONTENT_LENGTH`` (bytes an upload may have, default 16 MiB); any other Flask setting.
    """
    config = dict(config or {})
    engine: Engine | None = config.pop("ENGINE", None)
    index = config.pop("INDEX", None)
    device = config.pop("DEVICE", "cpu")
    if engine is None:
        if index is None:
            raise ValueError("create_app needs ENGINE (a search engine) or INDEX (an index directory)")
        if not Path(index).is_dir():
            raise FileNotFoundError(f"no index at {index}: build one with `fashion-search index`")
        from search.engine import SearchEngine

        engine = SearchEngine.open(index, device=device)
    if not isinstance(engine, Engine):
        missing = [m for m in ENGINE_METHODS if not callable(getattr(engine, m, None))]
        raise TypeError(f"ENGINE {type(engine).__name__} is not a search engine: it has no {', '.join(missing)}")
    token = config.pop("TOKEN", None) or None

    app = Flask(__name__)
    app.json = _JSON(app)
    app.json.sort_keys = False  # keep the engine's order: query before results, schema order
    app.config["MAX_CONTENT_LENGTH"] = DEFAULT_MAX_UPLOAD
    app.config.update(config)
    if app.config["MAX_CONTENT_LENGTH"] is not None and app.config["MAX_CONTENT_LENGTH"] < 1:
        raise ValueError(
            f"MAX_CONTENT_LENGTH must be a positive number of bytes, got {app.config['MAX_CONTENT_LENGTH']!r}"
        )
    app.extensions["fashion_search"] = AppState(engine=engine, categories=tuple(engine.categories()), token=token)

    from webui.api import bp as api
    from webui.views import bp as views

    app.register_blueprint(api)
    app.register_blueprint(views)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_security_headers)
    return app


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _http_error(exc: HTTPException):
    if not _is_api():
        return exc
    message = exc.description or exc.name
    if exc.code == 413:
        limit = request.max_content_length
        message = f"the upload is larger than the {limit / 2**20:g} MiB limit" if limit else exc.name
    elif exc.code == 404:
        message = f"no API endpoint {request.path}"
    elif exc.code == 405:
        message = f"{request.method} is not allowed on {request.path}"
    from flask import current_app

    current_app.extensions["fashion_search"].stats.error(exc.code)
    response = jsonify(error=message)
    response.status_code = exc.code
    return response


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    logger.exception("request %s %s failed", request.method, request.path)
    if _is_api():
        return jsonify(error="internal error: the server logged the details"), 500
    return "internal error", 500


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 4
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    device: str = "cpu"

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {self.port}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"the upload limit must be positive, got {self.max_upload_bytes} bytes")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_app(app: Flask, config: ServeConfig = ServeConfig()) -> None:
    """Run ``app`` under waitress until interrupted, printing the address it answers on."""
    from waitress import create_server

    if not _is_loopback(config.host):
        logger.warning("listening on %s: the server is reachable from other machines", config.host)
    server = create_server(
        app,
        host=config.host,
        port=config.port,
        threads=config.threads,
        # Flask answers uploads over the limit with a JSON 413; waitress only stops the absurd.
        max_request_body_size=4 * config.max_upload_bytes,
        ident="fashion-search",
    )
    host, port = server.effective_host, server.effective_port
    shown = f"[{host}]" if ":" in str(host) else host
    products = len(app.extensions["fashion_search"].engine)
    print(f"serving {products} products at http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def serve(
    index_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    threads: int = 4,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    device: str = "cpu",
) -> None:
    """Open the index in ``index_dir`` once and serve the page and the API until interrupted."""
    config = ServeConfig(
        host=host, port=port, threads=threads, token=token, max_upload_bytes=max_upload_bytes, device=device
    )
    if device == "cpu":
        import torch

        # Requests run side by side on waitress' threads: one torch thread each, so they do not
        # oversubscribe the cores (two OpenMP threads per request spun against each other here).
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    app = create_app({"INDEX": index_dir, "DEVICE": device, "TOKEN": token, "MAX_CONTENT_LENGTH": max_upload_bytes})
    logger.info("opened %s in %.1fs", index_dir, time.perf_counter() - t0)
    serve_app(app, config)
