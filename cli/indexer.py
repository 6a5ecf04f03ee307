"""Subcommands of the indexer: ``synth``, ``index`` and ``train appearance``."""

from __future__ import annotations

import json
import time


def _synth(args) -> int:
    from catalogues.synth import synthesize

    t0 = time.perf_counter()
    dump = synthesize(args.out, args.n, args.seed)
    dt = time.perf_counter() - t0
    print(f"wrote {args.n} products to {dump} in {dt:.1f}s ({args.n / dt:.0f} images/s)")
    return 0


def _index(args) -> int:
    from indexer.bulk import BulkConfig, build_index
    from search.engine import load_ram_index

    if args.engine != "ray" and (args.address or args.actors is not None or args.actor_threads is not None):
        raise ValueError("--address, --actors and --actor-threads are only used with --engine ray")
    config = BulkConfig(
        workers=args.workers,
        describe_workers=args.describe_workers,
        batch_size=args.batch_size,
        device=args.device,
        runtime=args.runtime,
        delete_missing=args.delete_missing,
        progress=not args.quiet,
    )
    if args.engine == "ray":
        from indexer.ray_bulk import RayConfig, build_index_ray

        ray_config = RayConfig(address=args.address, actors=args.actors or 2, threads=args.actor_threads)
        summary = build_index_ray(args.dump, args.models, args.out, config, ray_config)
    else:
        summary = build_index(args.dump, args.models, args.out, config)
    load_ram_index(args.out)  # the RAM snapshot written now, so a server starts from it at once
    print(
        f"indexed {summary['indexed']} products, {summary['photos']} photos ({summary['added']} new, "
        f"{summary['updated']} updated, {summary['unchanged']} unchanged, {summary['deleted']} deleted) in "
        f"{summary['seconds']:.1f}s ({summary['images_per_s']} images/s); skipped {summary['skipped']} products, "
        f"{summary['photos_left_out']} photos and {summary['bad_rows']} bad rows, "
        f"{summary['duplicates']} duplicate images; the index holds {summary['products']} products "
        f"({summary['store_bytes_per_product']} bytes each). Report: {args.out}/report.json"
    )
    return 0


def _train_appearance(args) -> int:
    from appearance.train import AppearanceConfig, train_appearance

    overrides = {
        k: v
        for k, v in (
            ("backbone", args.backbone),
            ("pretrained", args.pretrained),
            ("finetune", {"yes": True, "no": False}.get(args.finetune)),
            ("objective", args.objective),
            ("epochs", args.epochs),
            ("image_size", args.image_size),
            ("max_products", args.max_products),
            ("max_minutes", args.max_minutes),
            ("device", args.device),
        )
        if v is not None
    }
    cfg = AppearanceConfig.preset(args.preset, **overrides)
    metrics = train_appearance(args.data, args.out, config=cfg, progress=not args.quiet, resume=args.resume)
    print(json.dumps({k: v for k, v in metrics.items() if k != "epochs"}, indent=1))
    return 0


def register(commands) -> None:
    from cli.scaling import add_runtime_arg

    p = commands.top.add_parser("synth", help="write a synthetic product catalogue (images + products.jsonl)")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of products (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_synth)

    p = commands.top.add_parser(
        "index", help="describe a product dump into an index directory (resumable, incremental)"
    )
    p.add_argument("dump", help="product dump (.jsonl or .csv)")
    p.add_argument("--models", required=True, help="models directory (attributes.pt, detector.pt, appearance.pt)")
    p.add_argument("--out", required=True, help="index directory (created, or updated in place)")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default 2; 0: none)")
    p.add_argument(
        "--describe-workers",
        type=int,
        default=0,
        help="processes that each load the models and decode and describe a product at a time, on one "
        "thread (default 0: --workers decode, the models describe batches here); 2 on a 2-core CPU",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per model batch and per commit (default 32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_runtime_arg(p)
    p.add_argument("--delete-missing", action="store_true", help="remove indexed products that are not in the dump")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: decode workers and one model copy here (default); ray: Ray Data actors (pip install .[ray])",
    )
    p.add_argument("--address", help="--engine ray: the Ray cluster to join (default: start Ray on this machine)")
    p.add_argument("--actors", type=int, help="--engine ray: actors, each with one CPU and the models (default 2)")
    p.add_argument(
        "--actor-threads",
        type=int,
        help="--engine ray: torch threads per actor (default: a local run's, at most 2, so the stores are equal)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_index)

    p = commands.train.add_parser(
        "appearance", help="the network behind the appearance codes: ImageNet features or trained on a dump's regions"
    )
    p.add_argument("--data", required=True, help="training dump (.jsonl or .csv) with categories in text or attributes")
    p.add_argument("--out", required=True, help="models directory (appearance.pt is written there)")
    p.add_argument(
        "--preset",
        default="default",
        help="default (ImageNet MobileNetV2 fine-tuned to find products, when installed), frozen (its "
        "ImageNet features as they are), scratch (GoogLeNet trained here) or demo",
    )
    p.add_argument(
        "--backbone",
        help="mobilenet_v2, resnet18, resnet50, googlenet or efficientnet_lite2 (the `efficientnet` extra; "
        "default: the preset's)",
    )
    p.add_argument("--pretrained", choices=["imagenet", "none"], help="start from ImageNet weights or from scratch")
    p.add_argument(
        "--finetune", choices=["yes", "no"], help="train the network here (no: ImageNet features as they are)"
    )
    p.add_argument(
        "--objective",
        choices=["instance", "category"],
        help="instance: find the same product in synthetic shopper's photos; category: classes + view invariance",
    )
    p.add_argument("--max-minutes", type=float, help="training time budget in minutes")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from appearance-last.pt where it stopped")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument(
        "--image-size", type=int, help="override the preset's input size in pixels (default/frozen: the backbone's)"
    )
    p.add_argument("--max-products", type=int, help="train on at most this many regions")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_appearance)
