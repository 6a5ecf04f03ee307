"""The production server (waitress) in front of the app: its own refusals are the API's JSON errors,
it checks the Host header, and ``fashion-search serve`` says a busy port before loading any model.

Each test runs a real waitress server on a free loopback port, in a thread, over a tiny engine;
every request is bounded by a socket timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from webui.app import create_app
from webui.serving import PortError, ServeConfig, bind_sockets, make_server

TIMEOUT = 10  # seconds any one request may take


class TinyEngine:
    """The fewest methods ``search.protocol.Engine`` asks for; nothing here reaches them but health."""

    def __len__(self) -> int:
        return 0

    def categories(self) -> list[str]:
        return ["dress"]

    def search(self, query):
        raise ValueError("no products")

    def product(self, product_id):
        return None

    def thumbnail(self, product_id, photo=0):
        return None

    def add(self, product, image):
        raise ValueError("read-only")

    def delete(self, product_id) -> bool:
        return False

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {"products": 0, "categories": {}}

    def refresh(self):
        return None

    def index_status(self) -> dict:
        return {"products": 0, "photos": 0, "built": 0, "reloads": [], "indexing": None}


def run_in_thread(running):
    """Run a waitress server in a thread; the returned function stops it (waitress has no clean stop
    from another thread: its loop may trip over the closed sockets, which is no failure then)."""
    stopping = threading.Event()

    def loop():
        try:
            running.run()
        except (OSError, ValueError):
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop():
        stopping.set()
        running.close()
        thread.join(TIMEOUT)

    return stop


@pytest.fixture
def server():
    """``(port, config)`` of a waitress server whose upload limit is 64 KiB (so its own cap is 256 KiB)."""
    config = ServeConfig(host="127.0.0.1", port=0, threads=2, max_upload_bytes=64 * 1024)
    app = create_app({"ENGINE": TinyEngine(), "MAX_CONTENT_LENGTH": config.max_upload_bytes})
    running = make_server(app, config)
    stop = run_in_thread(running)
    yield running.effective_port, config
    stop()


def request(port: int, method: str, path: str, *, body: bytes | None = None, headers=None):
    """(status, headers, body) of one request; the body is sent whole, even when refused early."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for name, value in {**(headers or {}), "Content-Length": str(len(body or b""))}.items():
            conn.putheader(name, value)
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered before reading it all, as it may
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def multipart(size: int) -> tuple[bytes, str]:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n\r\n'.encode()
        + b"\xff" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def assert_json_error(status, headers, body, want_status, *words):
    assert status == want_status, (status, body[:300])
    assert headers["Content-Type"].split(";")[0] == "application/json", headers
    message = json.loads(body)["error"]
    for word in words:
        assert word in message, message


def test_a_body_over_the_upload_limit_is_flasks_json_413(server):
    port, _config = server
    body, kind = multipart(100 * 1024)  # over the 64 KiB limit, under waitress' 256 KiB cap
    status, headers, answer = request(port, "POST", "/api/search", body=body, headers={"Content-Type": kind})
    assert_json_error(status, headers, answer, 413, "upload limit", "65,536 bytes")


def test_a_body_over_waitress_cap_is_a_json_413_too(server):
    # waitress refuses these itself, before Flask sees them: it used to answer in plain text
    port, _config = server
    body, kind = multipart(300 * 1024)
    status, headers, answer = request(port, "POST", "/api/search", body=body, headers={"Content-Type": kind})
    assert_json_error(status, headers, answer, 413, "larger than this server's", "limit")
    status, headers, answer = request(port, "POST", "/api/products", body=body, headers={"Content-Type": kind})
    assert_json_error(status, headers, answer, 413)


def test_waitress_own_bad_request_is_json(server):
    port, _config = server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), raw[:200]
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"]


def test_a_foreign_host_is_refused_by_the_loopback_server(server):
    port, _config = server
    status, headers, body = request(port, "GET", "/api/health", headers={"Host": "rebound.evil.example"})
    assert_json_error(status, headers, body, 400, "'rebound.evil.example'", "--allowed-hosts")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert request(port, "GET", "/api/health", headers={"Host": host})[0] == 200, host


def test_a_405_carries_allow(server):
    port, _config = server
    status, headers, body = request(port, "TRACE", "/api/search")
    assert_json_error(status, headers, body, 405, "TRACE")
    assert "POST" in headers["Allow"]


def test_bind_says_which_port_is_busy():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortError, match=f"port {port} on 127.0.0.1 is already in use.*--port"):
            bind_sockets("127.0.0.1", port)
    with pytest.raises(PortError, match="no such host|not an address"):
        bind_sockets("no-such-host.invalid", 0)


def test_serve_on_a_busy_port_exits_2_before_loading_any_model(tmp_path, capsys, monkeypatch):
    import webui.serving
    from cli.main import main

    def load(*args, **kwargs):
        raise AssertionError("models were loaded before the port was checked")

    monkeypatch.setattr(webui.serving, "create_app", load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "Traceback" not in err, err


def test_bound_sockets_serve_on_the_port_they_hold():
    sockets = bind_sockets("127.0.0.1", 0)
    port = sockets[0].getsockname()[1]
    with pytest.raises(PortError):  # held from the moment it is bound, while models would load
        bind_sockets("127.0.0.1", port)
    config = ServeConfig(port=port)
    stop = run_in_thread(make_server(create_app({"ENGINE": TinyEngine()}), config, sockets))
    try:
        status, _headers, body = request(port, "GET", "/api/health", headers={"Host": f"127.0.0.1:{port}"})
        assert status == 200 and json.loads(body) == {"status": "ok", "products": 0}
    finally:
        stop()
