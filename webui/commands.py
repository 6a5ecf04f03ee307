"""Subcommands contributed by ``webui``: ``demo`` (and, as it lands, ``serve``)."""

from __future__ import annotations

from pathlib import Path


def _demo(args) -> int:
    from webui.demo import run_demo

    return run_demo(Path(args.home), args.n, args.seed)


def register(commands) -> None:
    p = commands.top.add_parser("demo", help="build, train, index and serve the synthetic demo catalogue")
    p.add_argument("--home", default=".fashion-search/demo", help="cache folder (default .fashion-search/demo)")
    p.add_argument("--n", type=int, default=2000, help="synthetic products (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
