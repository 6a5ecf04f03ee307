"""Saying a bad value back in an error without saying back megabytes."""

from __future__ import annotations

ECHO = 100  # characters of a bad value said back in an error


def echo(value, limit: int = ECHO) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, with its full length when cut."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"
