"""Which Host headers a server answers: a DNS-rebinding page must not read the API."""

from __future__ import annotations

import ipaddress
import logging

from foundation.echo import echo

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # the Host names a loopback server answers by default


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
