"""Subcommands of the indexer: ``synth`` (and, as they land, ``index``)."""

from __future__ import annotations

import time


def _synth(args) -> int:
    from indexer.synth import synthesize

    t0 = time.perf_counter()
    dump = synthesize(args.out, args.n, args.seed)
    dt = time.perf_counter() - t0
    print(f"wrote {args.n} products to {dump} in {dt:.1f}s ({args.n / dt:.0f} images/s)")
    return 0


def register(commands) -> None:
    p = commands.top.add_parser("synth", help="write a synthetic product catalogue (images + products.jsonl)")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of products (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_synth)
