"""Search latency with and without filters: synthetic products, the InvertedIndex alone (no describe).

Prints, in one run, p50/p99 latency of a query of the largest category (k=20) unfiltered beside the
same query narrowed by one attribute (colour), two (colour + sleeve_length), a price range, and a
deep page (offset 400), with the candidates each leaves. A filter gathers its postings' codes into a
temporary faiss index before the popcount scan; this measures what that costs.

Usage: python benchmarks/filter_bench.py [--n 100000] [--queries 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from foundation.schema import default_schema  # noqa: E402
from search.index import InvertedIndex  # noqa: E402

CODE_BYTES = 232  # as benchmarks/search_bench.py: inception4e + inception5b bits
COLOUR_BINS = 132


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    schema = default_schema()
    cats = list(schema.category_names)
    skew = 1.0 / np.arange(1, len(cats) + 1) ** 1.1
    skew /= skew.sum()
    n = args.n
    colours = schema.group("colour").values
    sleeves = schema.group("sleeve_length").values
    idx = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=COLOUR_BINS, schema=schema)
    for start in range(0, n, 50_000):
        m = min(n, start + 50_000) - start
        idx.add(
            [f"p{i:07d}" for i in range(start, start + m)],
            [cats[c] for c in rng.choice(len(cats), m, p=skew)],
            [
                {"colour": colours[c], "sleeve_length": sleeves[s]}
                for c, s in zip(rng.integers(0, len(colours), m), rng.integers(0, len(sleeves), m))
            ],
            rng.integers(0, 256, (m, CODE_BYTES), dtype=np.uint8),
            rng.integers(0, 256, (m, COLOUR_BINS), dtype=np.uint8),
            prices=[None if p < 8 else float(p) for p in rng.integers(5, 200, m)],
        )
    category = cats[0]
    size = idx.category_sizes()[category]
    print(f"products: {n:,}; the largest category {category!r}: {size:,}; k=20, 1 thread, {args.queries} queries")
    queries = rng.integers(0, 256, (args.queries, CODE_BYTES), dtype=np.uint8)
    q_colour = rng.random(COLOUR_BINS)
    cases = [
        ("no filter", {}),
        ("colour=red", {"filters": {"colour": "red"}}),
        ("colour=red, sleeve_length=long", {"filters": {"colour": "red", "sleeve_length": "long"}}),
        ("price 20..60", {"price_min": 20.0, "price_max": 60.0}),
        ("colour=red, price 20..60", {"filters": {"colour": "red"}, "price_min": 20.0, "price_max": 60.0}),
        ("no filter, offset 400", {"offset": 400}),
    ]
    print(f"{'narrowed by':34s}{'candidates':>11s}{'p50 ms':>9s}{'p99 ms':>9s}")
    for name, kw in cases:
        ts, candidates = [], 0
        for q in queries:
            t = time.perf_counter()
            res = idx.search(q, q_colour, category, {"colour": "red"}, k=20, **kw)
            ts.append(time.perf_counter() - t)
            candidates = res.candidates
        ms = np.asarray(ts) * 1e3
        print(f"{name:34s}{candidates:11,d}{np.percentile(ms, 50):9.2f}{np.percentile(ms, 99):9.2f}")


if __name__ == "__main__":
    main()
