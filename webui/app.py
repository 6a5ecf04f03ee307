"""The Flask application factory and the production server that runs it.

``create_app(config)`` takes a search engine (``ENGINE``) or an index directory (``INDEX``) that it
opens once, at start-up; requests never load models or read the index from disk. ``serve`` runs
the application under waitress, bound to the loopback interface unless told otherwise.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flask import Flask, abort, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from foundation.echo import echo
from search.protocol import Engine
from webui.examples import Example, load_examples
from webui.hosts import host_allowed, parse_allowed_hosts
from webui.reload import DEFAULT_RELOAD_S, IndexWatcher

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
    watcher: IndexWatcher | None = None  # live re-indexing (webui.reload)
    examples: dict[str, Example] = field(default_factory=dict)  # photos the page offers to try (webui.examples)


def check_index(index) -> None:
    if not Path(index).is_dir():
        raise FileNotFoundError(f"no index at {index}: build one with `fashion-search index`")


def create_app(config: Mapping | None = None) -> Flask:
    """The web application.

    Config keys: ``ENGINE`` (a ``search.protocol.Engine``: a ``SearchEngine``, or an object with its
    methods) or ``INDEX`` (an index directory, opened with ``SearchEngine.open`` on ``DEVICE``,
    default cpu, and ``RUNTIME``, torch or onnx, default torch); ``TOKEN`` (needed by the product
    update endpoints; without it they are disabled);
    ``MAX_CONTENT_LENGTH`` (bytes an upload may have, default 16 MiB); ``MAX_FORM_MEMORY_SIZE`` (bytes a
    text field of a form may have, Flask's default 500,000); ``ALLOWED_HOSTS`` (the names a request's
    Host header may give, each ``name`` or ``name:port``; None, the default, allows any; ``serve_app``
    sets it from ``ServeConfig``); ``RELOAD_S`` (seconds between checks for a finished bulk run into
    the index directory, loaded without a restart: default 2 with ``INDEX``, none with ``ENGINE``;
    0 turns it off); ``EXAMPLES`` (a folder of example photos the page offers to try, read once:
    ``webui.examples``; none by default); any other Flask setting.
    """
    config = dict(config or {})
    examples_dir = config.pop("EXAMPLES", None)
    # read before any model loads: a bad folder is said at once
    examples = (
        load_examples(examples_dir, max_bytes=config.get("MAX_CONTENT_LENGTH", DEFAULT_MAX_UPLOAD))
        if examples_dir  # None or "": no examples
        else {}
    )
    engine: Engine | None = config.pop("ENGINE", None)
    index = config.pop("INDEX", None)
    device = config.pop("DEVICE", "cpu")
    runtime = config.pop("RUNTIME", "torch")
    reload_s = config.pop("RELOAD_S", DEFAULT_RELOAD_S if engine is None else None)
    if engine is None:
        if index is None:
            raise ValueError("create_app needs ENGINE (a search engine) or INDEX (an index directory)")
        check_index(index)
        from search.engine import SearchEngine

        # without an admin token nothing is written: the store is opened read-only
        engine = SearchEngine.open(index, device=device, writable=bool(config.get("TOKEN")), runtime=runtime)
    if not isinstance(engine, Engine):
        raise TypeError(f"ENGINE {type(engine).__name__} is not a search engine (search.protocol.Engine)")
    token = config.pop("TOKEN", None) or None

    app = Flask(__name__)
    app.json = _JSON(app)
    app.json.sort_keys = False  # keep the engine's order: query before results, schema order
    app.config["MAX_CONTENT_LENGTH"] = DEFAULT_MAX_UPLOAD
    app.config["ALLOWED_HOSTS"] = None
    app.config.update(config)
    app.config["ALLOWED_HOSTS"] = parse_allowed_hosts(app.config["ALLOWED_HOSTS"])
    if app.config["MAX_CONTENT_LENGTH"] is not None and app.config["MAX_CONTENT_LENGTH"] < 1:
        raise ValueError(
            f"MAX_CONTENT_LENGTH must be a positive number of bytes, got {app.config['MAX_CONTENT_LENGTH']!r}"
        )
    watcher = IndexWatcher(engine, reload_s).start() if reload_s else None
    app.extensions["fashion_search"] = AppState(
        engine=engine, categories=tuple(engine.categories()), token=token, watcher=watcher, examples=examples
    )

    from webui.api import bp as api
    from webui.views import bp as views

    app.register_blueprint(api)
    app.register_blueprint(views)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    app.before_request(_check_host)
    app.after_request(_security_headers)
    return app


def _is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def human_size(n: int | None) -> str:
    if n is None:
        return "no"
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def _too_large() -> str:
    """Which limit a 413 hit: the whole upload's, or a text field's (Werkzeug raises both bare)."""
    upload, length = request.max_content_length, request.content_length
    if upload is not None and (length is None or length > upload):
        sent = f"the request is {human_size(length)}, " if length is not None else "the request is "
        return f"{sent}larger than the {human_size(upload)} upload limit"
    return (
        f"a text field of the form is larger than the {human_size(request.max_form_memory_size)} limit for text "
        f"fields, or the form has more than {request.max_form_parts} parts; only the photo, the file field "
        f"'image', may be larger (up to the {human_size(upload)} upload limit)"
    )


def _http_error(exc: HTTPException):
    if not _is_api():
        return exc
    message = exc.description or exc.name
    if exc.code == 413:
        message = _too_large()
    elif exc.code == 404:
        message = f"no API endpoint {echo(request.path)}"
    elif exc.code == 405:
        allowed = ", ".join(m for m in getattr(exc, "valid_methods", None) or () if m not in ("HEAD", "OPTIONS"))
        message = f"{echo(request.method)} is not allowed on {echo(request.path)}" + (
            f"; use {allowed}" if allowed else ""
        )
    from flask import current_app

    current_app.extensions["fashion_search"].stats.error(exc.code)
    response = jsonify(error=message)
    response.status_code = exc.code
    # Werkzeug's own headers for the error: Allow on a 405 (RFC 9110), WWW-Authenticate on a 401.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    logger.exception("request %s %s failed", request.method, request.path)
    if _is_api():
        return jsonify(error="internal error: the server logged the details"), 500
    return "internal error", 500


def _check_host():
    """Refuse a request whose Host is not this server's: a page on another site that rebinds its
    own name to this address (DNS rebinding) must not read the API."""
    from flask import current_app

    allowed = current_app.config.get("ALLOWED_HOSTS")
    header = request.environ.get("HTTP_HOST")
    if not host_allowed(header, allowed):
        abort(
            400,
            description=f"the Host header {echo(header)} is not a name this server answers to "
            f"(it answers to {', '.join(allowed)}; start it with --allowed-hosts to add one)",
        )


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
