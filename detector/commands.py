"""Subcommands contributed by ``detector``."""


def register(commands) -> None:
    """None yet."""
