"""Indexer benchmark on the shared clothing photos: end-to-end throughput and code quality.

Prints, from one run:
- images/s of ``build_index`` end to end (decode workers, models, LMDB writes) and the share of
  each stage (decode is CPU time summed over the workers); with ``--photos K`` the same photos
  again as a multi-image dump (products of K photos of one clothing label), side by side;
- store bytes per product (LMDB with 256-px thumbnails) and without thumbnails;
- bit entropy of the stored codes;
- float vs binary retrieval: category mAP of the clothing val photos against each other, ranked
  by float features (L2, and cosine of the median-centred features) and by Hamming distance.

The attribute model and the detector are taken from ``--models`` when their files are there;
otherwise the run says so and uses the tests' stand-ins, whose cost is near zero, so the figure
is then the indexer's own throughput (decode, appearance, colour, write).

Usage: python benchmarks/indexer_bench.py --models MODELS [--clothing DIR] [--n 600] [--workers 2] [--photos K]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from appearance.evaluate import bit_entropy, float_vs_binary  # noqa: E402
from appearance.model import AppearanceCoder  # noqa: E402
from catalogues.datasets import clothing_rows  # noqa: E402
from foundation.images import load_image  # noqa: E402
from foundation.schema import default_schema  # noqa: E402
from indexer.bulk import BulkConfig, build_index  # noqa: E402
from indexer.describe import Describer  # noqa: E402
from indexer.store import Store  # noqa: E402


def clothing_dump(root: Path, out: Path, n: int, split: str | None, photos: int = 1) -> Path:
    """``n`` clothing photos as a dump: a product each, or products of ``photos`` photos of one label."""
    rows = list(clothing_rows(root, split=split))[:n]
    dump = out / f"clothing-{photos}.jsonl"
    by_label: dict[str, list] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    with dump.open("w") as fh:
        for label, group in by_label.items():
            for i in range(0, len(group), photos):
                part = group[i : i + photos]
                row = {"id": part[0]["image"], "images": [str(r["path"]) for r in part], "title": label}
                fh.write(json.dumps(row) + "\n")
    return dump


def describer_for(models: Path) -> tuple[Describer, list[str]]:
    from tests.indexer_fakes import FakeDetector, FakePredictor

    notes = []
    try:
        from attributes.predict import AttributePredictor

        predictor = AttributePredictor.load(models)
    except (ImportError, ValueError) as exc:
        notes.append(f"attribute model: stand-in ({exc})")
        predictor = FakePredictor()
    try:
        from detector.predict import GarmentDetector

        detector = GarmentDetector.load(models)
    except (ImportError, ValueError) as exc:
        notes.append(f"detector: stand-in ({exc})")
        detector = FakeDetector()
    return Describer(predictor=predictor, detector=detector, coder=AppearanceCoder.load(models)), notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--clothing", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/clothing")
    ap.add_argument("--n", type=int, default=600, help="photos to index")
    ap.add_argument("--queries", type=int, default=400, help="val photos for float vs binary")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--photos", type=int, default=1, help="also index the photos as products of this many")
    args = ap.parse_args()
    torch.set_num_threads(2)
    describer, notes = describer_for(args.models)
    for note in notes:
        print("note:", note)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in sorted({1, args.photos}, reverse=True):  # the multi-image run first: the baseline's cache is as cold
            dump = clothing_dump(args.clothing, tmp, args.n, None, k)
            t0 = time.perf_counter()
            s = build_index(
                dump,
                args.models,
                tmp / f"index-{k}",
                BulkConfig(workers=args.workers, batch_size=args.batch_size, progress=False),
                describer=describer,
            )
            wall = time.perf_counter() - t0
            print(
                f"{'one photo a product' if k == 1 else f'up to {k} photos a product'}: {s['photos']} photos of "
                f"{s['indexed']} products in {wall:.1f}s: {s['photos'] / wall:.2f} images/s, "
                f"{s['indexed'] / wall:.2f} products/s end to end ({s['skipped']} skipped, "
                f"{s['duplicates']} duplicate images, {s['photos_left_out']} photos left out)"
            )
        print("stage seconds:", s["stage_seconds"])
        print("stage share:  ", s["stage_share"])
        with Store(tmp / "index-1") as store:  # the one-photo run's, which `s` reports
            codes = np.stack([r.photos[0].description.code for r in store.iter_records()])
            thumbs = sum(len(store.thumbnail(r.id) or b"") for r in store.iter_records())
            n = len(store)
            print(
                f"store: {s['store_bytes_per_product']} bytes/product on disk (LMDB), of which thumbnails "
                f"{thumbs / n:.0f} bytes/product"
            )
        print("stored codes:", {k: round(v, 4) if isinstance(v, float) else v for k, v in bit_entropy(codes).items()})
    schema = default_schema()
    images, labels = [], []
    for r in clothing_rows(args.clothing, split="val"):
        cat = schema.dataset_category("clothing", r["label"])
        if cat is None:
            continue
        im = load_image(r["path"])
        im.thumbnail((describer.coder.image_size * 2,) * 2)
        images.append(im)
        labels.append(cat)
        if len(images) >= args.queries:
            break
    fig = float_vs_binary(describer.coder, images, labels)
    print(f"float vs binary on {fig['queries']} clothing val photos (category mAP, all others ranked):")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in fig.items()}, indent=1))


if __name__ == "__main__":
    main()
