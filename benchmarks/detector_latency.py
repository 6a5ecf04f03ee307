"""Detection latency, batch 1, at the model's input size: prints ms per image (median and p90).

Usage: .venv/bin/python benchmarks/detector_latency.py MODELS_DIR DUMP [--n 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models")
    ap.add_argument("dump")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from detector.data import products_with_boxes
    from detector.predict import GarmentDetector
    from foundation.images import load_image

    detector = GarmentDetector.load(args.models)
    images = [load_image(p.photos[0].path) for p in products_with_boxes(args.dump)[: args.n]]
    detector.detect(images[:1])  # warm-up
    times = []
    for im in images:
        t0 = time.perf_counter()
        detector.detect([im])
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    print(
        f"{len(times)} images, threads {args.threads}: median {statistics.median(times):.1f} ms, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms per image (batch 1)"
    )


if __name__ == "__main__":
    main()
