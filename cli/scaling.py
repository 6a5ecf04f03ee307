"""Scaling out and speeding up: ``export milvus`` and ``export onnx``, the ``--backend`` flags that
``query`` and ``serve`` share, and the ``--runtime`` flag they share with ``index``."""

from __future__ import annotations

import json

BACKENDS = ("embedded", "milvus")
RUNTIMES = ("torch", "onnx")  # foundation.runtime.RUNTIMES, here without importing torch for --help


def add_runtime_arg(p) -> None:
    """The flag that chooses what runs the models' CNNs."""
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="torch: PyTorch (default); onnx: ONNX Runtime on the CPU, from the graphs `fashion-search export "
        "onnx --models DIR` cached beside the models (pip install 'fashion-search[onnx]')",
    )


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
    if getattr(args, "runtime", "torch") != "torch":
        raise ValueError("--backend milvus loads its models on the torch runtime only: leave out --runtime")

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


def _export_onnx(args) -> int:
    from pathlib import Path

    from indexer.graphs import MODELS, calibration_photos, export_graphs

    if not Path(args.models).is_dir():
        raise FileNotFoundError(f"no models directory at {args.models}")
    photos = calibration_photos(args.calibration, args.calibration_photos) if args.calibration else ()
    done = export_graphs(args.models, models=args.model or MODELS, force=args.force, calibration=photos)
    print(json.dumps(done, indent=1))
    return 0


def register(commands) -> None:
    export = commands.top.add_parser(
        "export", help="copy an index into a serving engine, or the models into ONNX graphs"
    ).add_subparsers(dest="target", metavar="TARGET", required=True)
    p = export.add_parser(
        "onnx",
        help="export the models' CNNs as ONNX graphs, for `--runtime onnx` (pip install 'fashion-search[onnx]')",
        description="Export the appearance network, the attribute model's image encoder, and the detector's "
        "backbone and box head (its fully connected layers in int8) of DIR as ONNX graphs, cached in DIR/onnx "
        "under the hash of each model file (a retrained model needs exporting again; an unchanged one is kept). "
        "`index` copies them into the index it writes. Where the attribute model and the appearance network share "
        "their first trunk stages, those stages and each one's rest too. With --calibration DUMP, the detector's "
        "backbone in int8 too.",
    )
    p.add_argument("--models", required=True, metavar="DIR", help="models directory, or an index's models folder")
    p.add_argument(
        "--model",
        action="append",
        choices=("appearance", "attributes", "detector"),
        help="only this model (repeat for more; default: all three)",
    )
    p.add_argument("--force", action="store_true", help="export again even where the cached graph is current")
    p.add_argument(
        "--calibration",
        metavar="DUMP",
        help="also quantize the detector's backbone to int8, calibrated on this dump's first photos "
        "(your catalogue's; `--runtime onnx` then runs it: a third less time a photo, Table 3 within 0.01)",
    )
    p.add_argument(
        "--calibration-photos", type=int, default=100, metavar="N", help="photos the calibration reads (default 100)"
    )
    p.set_defaults(func=_export_onnx)

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
