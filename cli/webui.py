"""Subcommands contributed by ``webui``: ``demo`` and ``serve``."""

from __future__ import annotations

import os
from pathlib import Path

from cli.demo import DEMO_PRODUCTS

TOKEN_ENV = "FASHION_SEARCH_TOKEN"


def _demo(args) -> int:
    from cli.demo import run_demo

    return run_demo(Path(args.home), args.n, args.seed, host=args.host, port=args.port)


def _serve(args) -> int:
    from cli.scaling import engine_opener
    from webui.serving import ServeConfig, serve

    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    open_engine = engine_opener(args, writable=bool(token))  # without a token nothing is written
    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=token,
        threads=args.threads,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        device=args.device,
        runtime=args.runtime,
        allowed_hosts=tuple(args.allowed_hosts.split(",")) if args.allowed_hosts is not None else None,
        examples=Path(args.examples) if args.examples else None,
    )
    serve(Path(args.index), config=config, reload_s=args.reload_s, open_engine=open_engine)
    return 0


def register(commands) -> None:
    from cli.scaling import add_backend_args, add_runtime_arg

    p = commands.top.add_parser(
        "demo", help="build, train, index and serve the synthetic demo catalogue, with example photos to try"
    )
    p.add_argument("--home", default=".fashion-search/demo", help="cache folder (default .fashion-search/demo)")
    p.add_argument("--n", type=int, default=DEMO_PRODUCTS, help=f"synthetic products (default {DEMO_PRODUCTS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.set_defaults(func=_demo)

    p = commands.top.add_parser(
        "serve",
        help="serve an index: the search page and the REST API",
        description="Load INDEX once and answer the search page and the REST API "
        "(described at /api/openapi.json) under waitress.",
    )
    p.add_argument("index", help="index directory written by `fashion-search index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--token",
        help=f"token that POST/DELETE /api/products require (or ${TOKEN_ENV}); "
        "without one, product updates are disabled",
    )
    p.add_argument("--threads", type=int, default=4, help="request threads (default 4)")
    p.add_argument("--max-upload-mb", type=float, default=16, help="largest upload accepted, in MiB (default 16)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_runtime_arg(p)
    p.add_argument(
        "--reload-s",
        type=float,
        default=2.0,
        help="seconds between checks for a finished `fashion-search index` into INDEX, loaded without a "
        "restart (default 2; 0: never)",
    )
    p.add_argument(
        "--allowed-hosts",
        metavar="H1,H2",
        help="the names (name or name:port) a request's Host header may give, * for any; default: "
        "localhost, 127.0.0.1 and [::1] when listening on a loopback address, any otherwise "
        "(a page on another site cannot read the API through DNS rebinding)",
    )
    p.add_argument(
        "--examples",
        metavar="DIR",
        help="a folder of example photos the page offers to try (listed in DIR/examples.json, as "
        "`fashion-search demo` writes it, or else its JPEG, PNG and WebP files); default: none",
    )
    add_backend_args(p)
    p.set_defaults(func=_serve)
