"""Subcommands contributed by ``attributes``: train and evaluate the attribute model, and the
converters of the shared real datasets into training dumps."""

from __future__ import annotations

import json
from pathlib import Path


def _train(args) -> int:
    from attributes.train import AttributeTrainConfig, train_attributes
    from foundation.backbones import default_pretrained

    base = AttributeTrainConfig.preset(args.preset)
    overrides = {
        k: v
        for k, v in {
            "kind": "binary" if args.baseline else None,
            "backbone": args.backbone,
            "pretrained": args.pretrained,
            "frozen_stages": args.frozen_stages,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "device": args.device,
            "threads": args.threads,
            "max_minutes": args.max_minutes,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    if args.backbone is not None and args.pretrained is None:
        # another backbone: ImageNet where its file is installed, else from scratch (said, not silent)
        overrides["pretrained"] = default_pretrained(args.backbone)
        print(f"--backbone {args.backbone}: --pretrained {overrides['pretrained']} (its default here)")
    if overrides.get("pretrained", base.pretrained) == "none" and args.frozen_stages is None:
        overrides["frozen_stages"] = 0  # a trunk from scratch trains every stage
    if args.label_weighting:
        overrides["label_weighting"] = True
    if args.no_time_limit:
        overrides["max_minutes"] = None
    config = AttributeTrainConfig(**{**base.__dict__, **overrides})
    result = train_attributes(args.data, args.out, val_dump=args.val, config=config, resume=args.resume)
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    return 0


def _evaluate(args) -> int:
    from attributes.evaluate import AttributeEvalConfig, evaluate_attributes, format_report

    config = AttributeEvalConfig(beam=args.beam, baseline=not args.no_baseline, limit=args.limit)
    result = evaluate_attributes(
        args.data, args.models, config, train_dump=args.train, train_limit=args.train_limit, street_dump=args.street
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(format_report(result))
    return 0


def _convert(which: str):
    def run(args) -> int:
        from catalogues.convert import convert_ccp_crops, convert_clothing

        fn = convert_clothing if which == "clothing" else convert_ccp_crops
        dump, counts = fn(args.dir, args.out, split=args.split)
        print(f"wrote {counts['products']} products to {dump} ({counts['left_out']} left out)")
        return 0

    return run


# foundation.backbones' BACKBONES and PRETRAINED, spelled out so `--help` needs no torch (a test keeps them equal)
BACKBONE_CHOICES = ("mobilenet_v2", "resnet18", "resnet50", "googlenet", "efficientnet_lite2")
PRETRAINED_CHOICES = ("imagenet", "none")


def register(commands) -> None:
    p = commands.train.add_parser("attributes", help="train the CNN-LSTM attribute model (or its baseline)")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="training product dump (attributes and/or seller text); repeat it to train on several together "
        "(catalogue photos and garment crops of street photos, say)",
    )
    p.add_argument("--val", help="validation dump: early stopping on its NLL")
    p.add_argument("--out", required=True, help="model directory to write attributes.pt into")
    p.add_argument(
        "--preset",
        choices=("default", "demo", "scratch"),
        default="default",
        help="default: ImageNet trunk fine-tuned on real photos within ~20 min of CPU; demo: small and fast; "
        "scratch: the paper's ResNet-18 LSTM from scratch at 64 px",
    )
    p.add_argument("--baseline", action="store_true", help="train the binary-relevance baseline instead")
    p.add_argument(
        "--backbone",
        choices=BACKBONE_CHOICES,
        help="the encoder's trunk (default: the preset's; the default preset's is mobilenet_v2, or the first "
        "torchvision backbone whose ImageNet file is installed); efficientnet_lite2 needs the `efficientnet` extra",
    )
    p.add_argument(
        "--pretrained",
        choices=PRETRAINED_CHOICES,
        help="imagenet: start from the backbone's ImageNet weights (installed, never downloaded); none: from "
        "scratch (default: imagenet where the backbone's file is installed)",
    )
    p.add_argument(
        "--frozen-stages",
        type=int,
        dest="frozen_stages",
        help="first trunk stages (strides 2..32) kept frozen, 0-5; pretrained only (default: the preset's)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        dest="image_size",
        help="input size in pixels (default: the preset's, else the backbone's)",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--label-weighting", action="store_true", help="weight tokens by frequency^-3/4")
    p.add_argument("--max-minutes", type=float, dest="max_minutes", help="stop after the epoch crossing this")
    p.add_argument("--no-time-limit", action="store_true")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from attributes-last.pt")
    p.set_defaults(func=_train)

    p = commands.evaluate.add_parser("attributes", help="precision/recall/NLL, per-group accuracy, LSTM vs baseline")
    p.add_argument("--data", required=True, help="dump with known attributes (the validation split)")
    p.add_argument("--models", required=True, help="model directory")
    p.add_argument("--train", help="training dump, for Table 2's train row")
    p.add_argument(
        "--street",
        help="garment crops of street photos (`convert ccp-crops --split val`): their figures beside the shop photos'",
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=1000,
        dest="train_limit",
        help="products of the training dump to measure (default 1000)",
    )
    p.add_argument("--limit", type=int, help="measure only the first N products")
    p.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    p.add_argument("--no-baseline", action="store_true", dest="no_baseline")
    p.add_argument("--json", help="write the figures here as JSON")
    p.set_defaults(func=_evaluate)

    for name, help_ in (
        ("clothing", "single-garment photos -> product dump (images referenced, not copied)"),
        ("ccp-crops", "garment boxes of the street photos -> cropped product dump"),
    ):
        p = commands.convert.add_parser(name, help=help_)
        p.add_argument("dir", help="the dataset's folder")
        p.add_argument("--out", required=True, help="output folder (products.jsonl)")
        p.add_argument("--split", choices=("train", "val"), help="one split only (default: all)")
        p.set_defaults(func=_convert(name))
