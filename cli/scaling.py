"""Scaling out: ``export milvus``, and the ``--backend`` flags that ``query`` and ``serve`` share."""

from __future__ import annotations

import json

BACKENDS = ("embedded", "milvus")


def add_backend_args(p) -> None:
    """The flags that choose what serves the searches: the index's own RAM index, or Milvus."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="embedded",
        help="embedded: the index directory's RAM index (default); milvus: the collection at --milvus",
    )
    p.add_argument("--milvus", metavar="URI", help="the Milvus server, e.g. http://127.0.0.1:19530")
    p.add_argument("--collection", default="fashion_search", help="the Milvus collection (default fashion_search)")
    p.add_argument("--nprobe", type=int, default=16, help="IVF clusters searched per query (default 16)")


def check_backend(args) -> None:
    """Refuse a backend flag that does not fit, before any model loads."""
    if args.backend == "milvus" and not args.milvus:
        raise ValueError("--backend milvus needs --milvus URI (e.g. http://127.0.0.1:19530)")
    if args.backend != "milvus" and args.milvus:
        raise ValueError("--milvus is only used with --backend milvus")
    if args.nprobe < 1:
        raise ValueError(f"--nprobe must be at least 1, got {args.nprobe}")


def engine_opener(args, *, writable: bool):
    """A function opening the engine the flags ask for, or None for the embedded one."""
    check_backend(args)
    if args.backend != "milvus":
        return None

    def open_engine():
        from search.milvus import open_milvus_engine

        return open_milvus_engine(
            args.index,
            args.milvus,
            collection=args.collection,
            nprobe=args.nprobe,
            device=args.device,
            writable=writable,
        )

    return open_engine


def _export_milvus(args) -> int:
    from search.milvus_export import ExportSettings, export_store

    settings = ExportSettings(
        collection=args.collection, index_type=args.index_type, nlist=args.nlist, replace=args.replace
    )
    summary = export_store(args.index, args.milvus, settings, progress=not args.quiet)
    print(json.dumps(summary))
    return 0


def register(commands) -> None:
    export = commands.top.add_parser("export", help="copy an index into a serving engine").add_subparsers(
        dest="target", metavar="TARGET", required=True
    )
    p = export.add_parser(
        "milvus",
        help="load an index's store into a Milvus collection, for `serve --backend milvus`",
        description="Write every product of INDEX into a new Milvus collection: the code as a binary vector "
        "(HAMMING), the category as the partition key, each attribute group as a field, the colour histogram, "
        "price and display fields.",
    )
    p.add_argument("index", help="index directory written by `fashion-search index`")
    p.add_argument("--milvus", required=True, metavar="URI", help="the Milvus server, e.g. http://127.0.0.1:19530")
    p.add_argument("--collection", default="fashion_search", help="collection name (default fashion_search)")
    p.add_argument(
        "--index-type",
        choices=("BIN_FLAT", "BIN_IVF_FLAT"),
        default="BIN_FLAT",
        help="BIN_FLAT: exact, the embedded answer (default); BIN_IVF_FLAT: approximate, faster on millions",
    )
    p.add_argument("--nlist", type=int, default=1024, help="BIN_IVF_FLAT clusters (default 1024)")
    p.add_argument("--replace", action="store_true", help="drop a collection of the same name first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_export_milvus)
