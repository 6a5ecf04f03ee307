"""Subcommands contributed by ``detector``: train and evaluate the detector, and the converters of
the street photos (per-instance boxes) and of composed scenes into detection dumps."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def _train(args) -> int:
    from detector.model import DetectorConfig
    from detector.train import DetectorTrainConfig, train_detector

    base = DetectorTrainConfig.preset(args.preset)
    model = {
        k: v
        for k, v in {
            "backbone": args.backbone,
            "min_size": args.min_size,
            "max_size": args.max_size,
            "pretrained": args.pretrained,
            "trainable_layers": args.trainable_layers,
            "stride16": args.stride16,
            "roi_sampling_ratio": args.roi_sampling_ratio,
        }.items()
        if v is not None
    }
    overrides = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "device": args.device,
            "threads": args.threads,
            "seed": args.seed,
            "max_minutes": args.max_minutes,
        }.items()
        if v is not None
    }
    if args.no_time_limit:
        overrides["max_minutes"] = None
    config = replace(base, model=DetectorConfig(**{**base.model.to_dict(), **model}), **overrides)
    result = train_detector(args.data, args.out, val_dump=args.val, config=config, resume=args.resume)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))
    return 0


def _evaluate(args) -> int:
    from detector.evaluate import DetectorEvalConfig, evaluate_detector, format_report

    config = DetectorEvalConfig(limit=args.limit, score_threshold=args.threshold, guidance=args.guidance)
    result = evaluate_detector(args.data, args.models, config)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(format_report(result))
    return 0


def _convert_ccp(args) -> int:
    from catalogues.scenes import convert_ccp

    dump, counts = convert_ccp(args.dir, args.out, split=args.split)
    print(f"wrote {counts['products']} photos with {counts['boxes']} boxes to {dump}")
    return 0


def _convert_scenes(args) -> int:
    from catalogues.scenes import SceneConfig, convert_scenes

    config = SceneConfig(n=args.n, seed=args.seed, split=args.split, backgrounds=args.backgrounds)
    dump, counts = convert_scenes(args.dir, args.out, config)
    print(f"wrote {counts['products']} scenes with {counts['boxes']} boxes ({counts['pasted']} pasted) to {dump}")
    return 0


def register(commands) -> None:
    from detector.model import BACKBONES, GUIDANCE, PRETRAINED  # names only: no torch at start-up

    p = commands.train.add_parser("detector", help="train the Faster R-CNN garment detector on a dump's boxes")
    p.add_argument(
        "--data", required=True, action="append", help="training dump with boxes (repeat it to train on several)"
    )
    p.add_argument("--val", help="validation dump: Table 3 figures at the end")
    p.add_argument("--out", required=True, help="model directory to write detector.pt into")
    p.add_argument("--preset", choices=("default", "demo"), default="default")
    p.add_argument("--backbone", choices=BACKBONES, help="default mobilenet_v2")
    p.add_argument(
        "--pretrained",
        choices=PRETRAINED,
        help="imagenet: torchvision's ImageNet backbone weights (an error when not installed); none: from scratch; "
        "auto (default): imagenet where installed",
    )
    p.add_argument("--trainable-layers", type=int, dest="trainable_layers", help="backbone stages trained (pretrained)")
    p.add_argument(
        "--stride16",
        action=argparse.BooleanOptionalAction,
        help="mobilenet_v2: a stride-16 FPN level (features.13) instead of a second stride-32 one",
    )
    p.add_argument(
        "--roi-sampling-ratio",
        type=int,
        dest="roi_sampling_ratio",
        help="RoI pooling's samples a bin side in training (default 2, torchvision's; serving takes 1)",
    )
    p.add_argument("--min-size", type=int, dest="min_size")
    p.add_argument("--max-size", type=int, dest="max_size")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-minutes", type=float, dest="max_minutes")
    p.add_argument("--no-time-limit", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from detector-last.pt")
    p.set_defaults(func=_train)

    p = commands.evaluate.add_parser("detector", help="Table 3: mAP@0.5..0.9 guided vs non-guided, fallback, ms/image")
    p.add_argument("--data", required=True, help="dump with boxes (a held-out split)")
    p.add_argument("--models", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--threshold", type=float, default=0.3, help="score threshold of the guided ROI (fallback rate)")
    p.add_argument("--guidance", choices=GUIDANCE, default="ranked", help="how the guide selects ROIs")
    p.add_argument("--json")
    p.set_defaults(func=_evaluate)

    p = commands.convert.add_parser("ccp", help="street photos -> dump with per-instance garment boxes")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=("train", "val"))
    p.set_defaults(func=_convert_ccp)

    p = commands.convert.add_parser("scenes", help="garments cut from clothing photos, composed into scenes with boxes")
    p.add_argument("dir", help="the clothing dataset's folder")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "val"))
    p.add_argument(
        "--backgrounds", help="the ccp folder: paste onto its street photos (same split), keeping their boxes"
    )
    p.set_defaults(func=_convert_scenes)
