"""Attribute inference speed: ms per image at batch 1 and batch 32, auto and guided, greedy and beam.

    .venv/bin/python benchmarks/attributes_inference.py --models .fashion-search/models-real \
        --data .fashion-search/real/clothing-val/products.jsonl

Images are decoded before timing; the timings cover preprocessing, the encoder and decoding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from attributes.predict import AttributePredictor
from foundation.dump import read_dump
from foundation.images import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--data", required=True, help="a dump whose images are used")
    ap.add_argument("--n", type=int, default=64, help="images to time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = AttributePredictor.load(args.models)
    products = list(read_dump(args.data, check_images=False))[: args.n]
    images = [load_image(p.photos[0].path) for p in products]
    guides = [p.attributes.get("category") for p in products]
    predictor.predict(images[:4])  # warm-up
    figures = {}
    for label, batch, use_guides, beam in (
        ("auto b1", 1, False, 1),
        ("auto b32", 32, False, 1),
        ("guided b1", 1, True, 1),
        ("guided b32", 32, True, 1),
        ("auto beam3 b32", 32, False, 3),
    ):
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(0, len(images), batch):
                predictor.predict(images[i : i + batch], guides[i : i + batch] if use_guides else None, beam=beam)
            runs.append(1000 * (time.perf_counter() - t0) / len(images))
        figures[label] = round(statistics.median(runs), 2)
        print(f"{label:16} {figures[label]:8.2f} ms/image (median of {args.repeats}, {len(images)} images)")
    print(json.dumps({"ms_per_image": figures, "threads": args.threads, "image_size": predictor.prep["image_size"]}))


if __name__ == "__main__":
    main()
