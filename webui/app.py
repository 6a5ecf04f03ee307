"""The Flask application factory and the production server that runs it.

``create_app(config)`` takes a search engine (``ENGINE``) or an index directory (``INDEX``) that it
opens once, at start-up; requests never load models or read the index from disk. ``serve`` runs
the application under waitress, bound to the loopback interface unless told otherwise.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import json
import logging
import socket
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
from search.protocol import ENGINE_METHODS, Engine

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
WAITRESS_CAP = 4  # waitress refuses bodies over this many upload limits itself (still JSON: _json_error_channel)
LISTEN_BACKLOG = 1024  # waitress' own default
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # the Host names a loopback server answers by default
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


def _check_index(index) -> None:
    if not Path(index).is_dir():
        raise FileNotFoundError(f"no index at {index}: build one with `fashion-search index`")


def create_app(config: Mapping | None = None) -> Flask:
    """The web application.

    Config keys: ``ENGINE`` (a ``search.protocol.Engine``: a ``SearchEngine``, or an object with its
    methods) or ``INDEX`` (an index directory, opened with ``SearchEngine.open`` on ``DEVICE``,
    default cpu); ``TOKEN`` (needed by the product update endpoints; without it they are disabled);
    ``MAX_CONTENT_LENGTH`` (bytes an upload may have, default 16 MiB); ``MAX_FORM_MEMORY_SIZE`` (bytes a
    text field of a form may have, Flask's default 500,000); ``ALLOWED_HOSTS`` (the names a request's
    Host header may give, each ``name`` or ``name:port``; None, the default, allows any; ``serve_app``
    sets it from ``ServeConfig``); any other Flask setting.
    """
    config = dict(config or {})
    engine: Engine | None = config.pop("ENGINE", None)
    index = config.pop("INDEX", None)
    device = config.pop("DEVICE", "cpu")
    if engine is None:
        if index is None:
            raise ValueError("create_app needs ENGINE (a search engine) or INDEX (an index directory)")
        _check_index(index)
        from search.engine import SearchEngine

        # without an admin token nothing is written: the store is opened read-only
        engine = SearchEngine.open(index, device=device, writable=bool(config.get("TOKEN")))
    if not isinstance(engine, Engine):
        missing = [m for m in ENGINE_METHODS if not callable(getattr(engine, m, None))]
        raise TypeError(f"ENGINE {type(engine).__name__} is not a search engine: it has no {', '.join(missing)}")
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
    app.extensions["fashion_search"] = AppState(engine=engine, categories=tuple(engine.categories()), token=token)

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


def _size(n: int | None) -> str:
    if n is None:
        return "no"
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n:,} bytes"


def _too_large() -> str:
    """Which limit a 413 hit: the whole upload's, or a text field's (Werkzeug raises both bare)."""
    upload, length = request.max_content_length, request.content_length
    if upload is not None and (length is None or length > upload):
        sent = f"the request is {_size(length)}, " if length is not None else "the request is "
        return f"{sent}larger than the {_size(upload)} upload limit"
    return (
        f"a text field of the form is larger than the {_size(request.max_form_memory_size)} limit for text "
        f"fields, or the form has more than {request.max_form_parts} parts; only the photo, the file field "
        f"'image', may be larger (up to the {_size(upload)} upload limit)"
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


def parse_allowed_hosts(value) -> tuple[str, ...] | None:
    """Host names from ``"h1,h2"`` or a sequence, each normalised (lower case, IPv6 in brackets);
    None or ``*`` among them: any host."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        item = str(item).strip().lower()
        if not item:
            continue
        if item == "*":
            return None
        if any(c.isspace() or c in "/?#@" for c in item):
            raise ValueError(f"allowed host {echo(item)} is not a host name, an address or host:port")
        try:  # a bare IPv6 address: bracket it, as a Host header writes it
            item = f"[{ipaddress.IPv6Address(item)}]"
        except ValueError:
            pass
        host, port = _split_host(item)
        if port is not None and not port.isdigit():
            raise ValueError(f"allowed host {echo(item)} has a port that is not a number")
        names.append(item)
    if not names:
        raise ValueError("no allowed hosts given: name at least one, or * for any")
    return tuple(dict.fromkeys(names))


def _split_host(host: str) -> tuple[str, str | None]:
    """``("name", "port")`` from a Host header value (``name``, ``name:port``, ``[v6]:port``)."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1 :]
            return host[: end + 1], (rest[1:] if rest.startswith(":") else None)
        return host, None
    name, colon, port = host.rpartition(":")
    return (name, port) if colon and name else (host, None)


def host_allowed(header: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a request with this Host header is for this server: any when ``allowed`` is None; a
    request without one (HTTP/1.0; never a browser's) too."""
    if allowed is None or header is None:
        return True
    header = header.strip().lower()
    name, port = _split_host(header)
    name = name.rstrip(".")  # "localhost." is localhost
    return name in allowed or (port is not None and f"{name}:{port}" in allowed)


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


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 4
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    device: str = "cpu"
    # The Host header names answered: None, the default, is localhost, 127.0.0.1 and [::1] (any
    # port) when bound to a loopback address, and any name otherwise; ("*",) is any name.
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {self.port}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"the upload limit must be positive, got {self.max_upload_bytes} bytes")
        if self.allowed_hosts is not None:
            parse_allowed_hosts(self.allowed_hosts)

    def host_names(self) -> tuple[str, ...] | None:
        """The Host header names this server answers to (None: any)."""
        if self.allowed_hosts is not None:
            return parse_allowed_hosts(self.allowed_hosts)
        if not _is_loopback(self.host):
            return None
        own = self.host.lower()
        own = f"[{own}]" if ":" in own else own
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, own)))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PortError(ValueError):
    """The server cannot listen where it was told to (a busy port, an address not on this machine)."""


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound and listening on every address of ``host`` at ``port``, the way waitress would
    bind them: called before any model is loaded, so a busy port is said at once. They listen at
    once (with SO_REUSEADDR, a port is only held against another server once it listens): a
    client that connects while the models load waits in the queue and is answered when they are.

    Raises:
        PortError: the port is taken, or ``host`` is no address of this machine.
        PermissionError: the port needs privileges (below 1024).
    """
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortError(f"cannot listen on {host!r}: no such host ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(
            (i[0], i[1], i[2], i[3], i[4][:2]) for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)
        ):
            if sockets and port == 0:  # the second address of "localhost": the port the first one got
                address = (address[0], sockets[0].getsockname()[1])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress: no wait after a restart
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _bind(sock, address, host)
            sock.listen(LISTEN_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(sock: socket.socket, address: tuple, host: str) -> None:
    where = f"port {address[1]} on {address[0]}" + (f" ({host})" if host != address[0] else "")
    try:
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortError(
                f"{where} is already in use (another server is listening there): stop it, or pick another "
                "port with --port (--port 0 picks a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise PermissionError(f"not allowed to listen on {where}: ports below 1024 need privileges") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise PortError(f"cannot listen on {where}: {address[0]} is not an address of this machine") from None
        raise PortError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def _json_error_channel():
    """A waitress channel whose own error answers (a body over its cap, headers too large, a
    malformed request) are the API's JSON ``{"error": ...}``, not waitress' plain text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JSONErrorTask(ErrorTask):
        def execute(self):
            error = self.request.error
            if error.code == 413:
                cap = self.channel.server.adj.max_request_body_size
                message = f"the request body is larger than this server's {_size(cap)} limit"
            else:
                message = f"{error.reason.lower()}: {error.body}"
            body = json.dumps({"error": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend([("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JSONErrorChannel(HTTPChannel):
        error_task_class = JSONErrorTask

    return JSONErrorChannel


def make_server(app: Flask, config: ServeConfig = ServeConfig(), sockets: list[socket.socket] | None = None):
    """The waitress server for ``app`` on ``sockets`` (bound now when not given), not yet running.

    Sets the app's ``ALLOWED_HOSTS`` from ``config``. Bodies up to ``WAITRESS_CAP`` times the upload
    limit reach Flask, which answers those over the limit with its JSON 413; waitress refuses
    larger ones itself, as JSON too."""
    from waitress import create_server

    app.config["ALLOWED_HOSTS"] = config.host_names()
    if sockets is None:
        sockets = bind_sockets(config.host, config.port)
    cap = WAITRESS_CAP * max(config.max_upload_bytes, app.config.get("MAX_CONTENT_LENGTH") or 0)
    server = create_server(
        app,
        sockets=sockets,
        threads=config.threads,
        max_request_body_size=cap,
        ident="fashion-search",
    )
    channel = _json_error_channel()
    servers = getattr(server, "map", None)  # several addresses: a MultiSocketServer
    for each in servers.values() if servers is not None else [server]:
        if hasattr(each, "channel_class"):
            each.channel_class = channel
    return server


def serve_app(app: Flask, config: ServeConfig = ServeConfig(), sockets: list[socket.socket] | None = None) -> None:
    """Run ``app`` under waitress until interrupted, printing the address it answers on."""
    if not _is_loopback(config.host):
        logger.warning("listening on %s: the server is reachable from other machines", config.host)
    server = make_server(app, config, sockets)
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    host, port = listening[0]
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
    allowed_hosts: tuple[str, ...] | None = None,
) -> None:
    """Open the index in ``index_dir`` once and serve the page and the API until interrupted.

    The port is bound first: a busy one is said (``PortError``) before any model is loaded."""
    config = ServeConfig(
        host=host,
        port=port,
        threads=threads,
        token=token,
        max_upload_bytes=max_upload_bytes,
        device=device,
        allowed_hosts=allowed_hosts,
    )
    _check_index(index_dir)
    sockets = bind_sockets(config.host, config.port)
    try:
        if device == "cpu":
            import torch

            # Requests run side by side on waitress' threads: one torch thread each, so they do not
            # oversubscribe the cores (two OpenMP threads per request spun against each other here).
            torch.set_num_threads(1)
        t0 = time.perf_counter()
        app = create_app({"INDEX": index_dir, "DEVICE": device, "TOKEN": token, "MAX_CONTENT_LENGTH": max_upload_bytes})
        logger.info("opened %s in %.1fs", index_dir, time.perf_counter() - t0)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    serve_app(app, config, sockets)
