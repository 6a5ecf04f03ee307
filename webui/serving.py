"""The production server: waitress on sockets bound before any model loads, errors as JSON."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from webui.app import DEFAULT_MAX_UPLOAD, check_index, create_app, human_size
from webui.hosts import LOOPBACK_NAMES, parse_allowed_hosts

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024  # waitress' own default

WAITRESS_CAP = 4  # waitress refuses bodies over this many upload limits itself (still JSON: _json_error_channel)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 4
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    device: str = "cpu"
    runtime: str = "torch"  # or "onnx": the models' CNNs on ONNX Runtime (foundation.runtime)
    # The Host header names answered: None, the default, is localhost, 127.0.0.1 and [::1] (any
    # port) when bound to a loopback address, and any name otherwise; ("*",) is any name.
    allowed_hosts: tuple[str, ...] | None = None
    examples: Path | None = None  # a folder of example photos the page offers to try (webui.examples)

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
                message = f"the request body is larger than this server's {human_size(cap)} limit"
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
    config: ServeConfig = ServeConfig(),
    reload_s: float = 2.0,
    open_engine=None,
) -> None:
    """Open the index in ``index_dir`` once and serve the page and the API until interrupted.

    The port is bound first: a busy one is said (``PortError``) before any model is loaded.
    ``open_engine``: a function returning the engine to serve (another backend), called then."""
    check_index(index_dir)
    if config.examples is not None and not Path(config.examples).is_dir():
        raise FileNotFoundError(f"no examples folder at {config.examples}")
    sockets = bind_sockets(config.host, config.port)
    try:
        if config.device == "cpu":
            import torch

            # Requests run side by side on waitress' threads: one torch thread each, so they do not
            # oversubscribe the cores (two OpenMP threads per request spun against each other here).
            torch.set_num_threads(1)
        t0 = time.perf_counter()
        if reload_s < 0:
            raise ValueError(f"--reload-s must be 0 (never) or a positive number of seconds, got {reload_s!r}")
        settings = {
            "INDEX": index_dir,
            "DEVICE": config.device,
            "RUNTIME": config.runtime,
            "TOKEN": config.token,
            "MAX_CONTENT_LENGTH": config.max_upload_bytes,
            "RELOAD_S": reload_s,
            "EXAMPLES": config.examples,
        }
        app = create_app({**settings, "ENGINE": open_engine()} if open_engine else settings)
        logger.info("opened %s in %.1fs", index_dir, time.perf_counter() - t0)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    serve_app(app, config, sockets)
