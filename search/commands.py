"""Subcommands contributed by ``search``."""


def register(commands) -> None:
    """None yet."""
