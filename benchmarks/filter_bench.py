"""Search latency with and without filters: synthetic products, the InvertedIndex alone (no describe).

Prints, in one run, p50/p99 latency of a query of the largest category (k=20) unfiltered beside the
same query narrowed by one attribute (colour), two (colour + sleeve_length), a price range, and a
deep page (offset 400), with the candidates each leaves. A filter gathers its postings' codes into a
temporary faiss index before the popcount scan; this measures what that costs.

With ``--photos K`` the same products with K photos each (a row a photo; a search answers each
product once, at its best photo) are measured too, side by side.

Usage: python benchmarks/filter_bench.py [--n 100000] [--queries 100] [--photos 3]
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
from search.narrowing import Narrowing  # noqa: E402
from search.ranking import Probe, RankingConfig  # noqa: E402
from search.rows import PhotoRows  # noqa: E402
from search.tiers import search_page  # noqa: E402

CODE_BYTES = 232  # as benchmarks/search_bench.py: inception4e + inception5b bits
COLOUR_BINS = 132


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=int, default=1, help="also measure products of this many photos each")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    schema = default_schema()
    cats = list(schema.category_names)
    results = {}
    for photos in sorted({1, args.photos}):
        idx = build(schema, args.n, photos, args.seed)
        category = cats[0]
        rng = np.random.default_rng(args.seed + 1)
        queries = rng.integers(0, 256, (args.queries, CODE_BYTES), dtype=np.uint8)
        q_colour = rng.random(COLOUR_BINS)
        ranking = RankingConfig()
        for name, kw in CASES:
            narrowing = Narrowing.of(k=20, **kw)
            ts, candidates = [], 0
            for q in queries:
                t = time.perf_counter()
                probe = Probe.of(q, q_colour, {"colour": "red"}, idx.columns)
                res = search_page(idx, probe, category, narrowing, ranking)
                ts.append(time.perf_counter() - t)
                candidates = res.candidates
            ms = np.asarray(ts) * 1e3
            results[photos, name] = (candidates, np.percentile(ms, 50), np.percentile(ms, 99))
        size = idx.category_sizes()[category]
        print(
            f"{photos} photo(s) a product: {args.n:,} products, {idx.photo_count():,} photos; "
            f"the largest category {category!r}: {size:,} products; k=20, 1 thread, {args.queries} queries"
        )
    head = f"{'narrowed by':34s}" + "".join(
        f"{'cand.':>9s}{'p50 ms':>8s}{'p99 ms':>8s}  " for _ in sorted({1, args.photos})
    )
    print(head + ("  (one photo a product | " + f"{args.photos} photos a product)" if args.photos > 1 else ""))
    for name, _kw in CASES:
        row = f"{name:34s}"
        for photos in sorted({1, args.photos}):
            c, p50, p99 = results[photos, name]
            row += f"{c:9,d}{p50:8.2f}{p99:8.2f}  "
        print(row)


CASES = [
    ("no filter", {}),
    ("colour=red", {"filters": {"colour": "red"}}),
    ("colour=red, sleeve_length=long", {"filters": {"colour": "red", "sleeve_length": "long"}}),
    ("price 20..60", {"price_min": 20.0, "price_max": 60.0}),
    ("colour=red, price 20..60", {"filters": {"colour": "red"}, "price_min": 20.0, "price_max": 60.0}),
    ("no filter, offset 400", {"offset": 400}),
]


def build(schema, n: int, photos: int, seed: int) -> InvertedIndex:
    """``n`` products of skewed categories, each with ``photos`` photos (rows) of its own codes."""
    rng = np.random.default_rng(seed)
    cats = list(schema.category_names)
    skew = 1.0 / np.arange(1, len(cats) + 1) ** 1.1
    skew /= skew.sum()
    colours = schema.group("colour").values
    sleeves = schema.group("sleeve_length").values
    idx = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=COLOUR_BINS, schema=schema)
    for start in range(0, n, 50_000):
        m = min(n, start + 50_000) - start
        product_cats = [cats[c] for c in rng.choice(len(cats), m, p=skew)]
        attrs = [
            {"colour": colours[c], "sleeve_length": sleeves[s]}
            for c, s in zip(rng.integers(0, len(colours), m), rng.integers(0, len(sleeves), m))
        ]
        prices = [None if p < 8 else float(p) for p in rng.integers(5, 200, m)]
        rows = [(i, j) for i in range(m) for j in range(photos)]
        idx.add(
            PhotoRows(
                [f"p{start + i:07d}" for i, _j in rows],
                [product_cats[i] for i, _j in rows],
                [attrs[i] for i, _j in rows],
                rng.integers(0, 256, (len(rows), CODE_BYTES), dtype=np.uint8),
                rng.integers(0, 256, (len(rows), COLOUR_BINS), dtype=np.uint8),
                prices=[prices[i] for i, _j in rows],
                numbers=[j for _i, j in rows],
            )
        )
    return idx


if __name__ == "__main__":
    main()
