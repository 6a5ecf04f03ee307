"""Subcommands contributed by ``attributes``."""


def register(commands) -> None:
    """None yet."""
