"""Search benchmark: 1M synthetic products with a realistic category skew (codes, colours, attributes).

Prints, side by side in one run:
- full-scan Hamming search: faiss IndexBinaryFlat vs NumPy (bitwise_count) on the same codes, and the
  bytes scanned per second against the memory read bandwidth measured in the same run;
- a category-restricted query through the InvertedIndex: bytes scanned and latency p50/p99 vs the full scan;
- resident memory per product of the InvertedIndex;
- start-up time of the index from its snapshot (and from an LMDB store when --store is given).

Usage: python benchmarks/search_bench.py [--n 1000000] [--queries 200] [--store INDEX_DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
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

CODE_BYTES = 232  # 1856 bits: inception4e (832) + inception5b (1024)
COLOUR_BINS = 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pct(xs, p):
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--store", help="an index directory built by `fashion-search index`, to time start-up from its store"
    )
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)  # one query uses one core; say so rather than mix thread counts
    rng = np.random.default_rng(args.seed)
    schema = default_schema()
    cats = list(schema.category_names)
    skew = 1.0 / np.arange(1, len(cats) + 1) ** 1.1  # Zipf-like: a few categories hold most products
    skew /= skew.sum()
    n = args.n
    print(f"products: {n:,}; categories: {len(cats)}; largest category share {skew[0]:.1%}, smallest {skew[-1]:.2%}")

    codes = rng.integers(0, 256, (n, CODE_BYTES), dtype=np.uint8)
    colours = rng.integers(0, 256, (n, COLOUR_BINS), dtype=np.uint8)
    category_of = rng.choice(len(cats), n, p=skew)
    colour_values = schema.group("colour").values
    attrs = [{"colour": colour_values[c]} for c in rng.integers(0, len(colour_values), n)]
    queries = rng.integers(0, 256, (args.queries, CODE_BYTES), dtype=np.uint8)

    # Full scan: faiss vs numpy on the same codes.
    # The read bandwidth is measured on the same bytes, interleaved with the searches, so that
    # the ratio holds on a machine whose load changes during the run.
    flat = faiss.IndexBinaryFlat(CODE_BYTES * 8)
    flat.add(codes)
    words = codes.view(np.uint64)
    t_faiss, t_read = [], []
    for q in queries:
        t = time.perf_counter()
        flat.search(q[None], 20)
        t_faiss.append(time.perf_counter() - t)
        t = time.perf_counter()
        words.sum()
        t_read.append(time.perf_counter() - t)
    bw = n * CODE_BYTES / np.median(t_read)
    print(
        f"memory read bandwidth (1 thread, numpy sum over the same {n * CODE_BYTES / 1e6:.0f} MB of codes): {bw / 1e9:.2f} GB/s"
    )
    t_np = []
    for q in queries[: max(5, args.queries // 20)]:
        t = time.perf_counter()
        d = np.bitwise_count(words ^ q.view(np.uint64)).sum(1, dtype=np.uint32)
        np.argpartition(d, 20)[:20]
        t_np.append(time.perf_counter() - t)
    scanned = n * CODE_BYTES
    print("\nfull scan, k=20, 1 thread:")
    print(f"{'':28s}{'p50 ms':>10s}{'p99 ms':>10s}{'GB/s':>8s}{'of bandwidth':>14s}")
    for name, ts in (("faiss IndexBinaryFlat", t_faiss), ("numpy bitwise_count", t_np)):
        rate = scanned / np.median(ts)
        print(f"{name:28s}{pct(ts, 50):10.2f}{pct(ts, 99):10.2f}{rate / 1e9:8.2f}{rate / bw:14.0%}")
    del flat, words
    gc.collect()

    # The inverted index: resident memory per product and category-restricted latency. The
    # source arrays are dropped first and the index is filled in chunks, so the RSS growth is the
    # index's own (freed Python objects may stay in the allocator's arenas: an upper bound).
    del codes, colours, attrs
    gc.collect()
    before = rss_bytes()
    idx = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=COLOUR_BINS, schema=schema)
    t = time.perf_counter()
    chunk = 100_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        crng = np.random.default_rng([args.seed, start])
        idx.add(
            PhotoRows(
                [f"p{i:07d}" for i in range(start, stop)],
                [cats[c] for c in category_of[start:stop]],
                [{"colour": colour_values[c]} for c in crng.integers(0, len(colour_values), stop - start)],
                crng.integers(0, 256, (stop - start, CODE_BYTES), dtype=np.uint8),
                crng.integers(0, 256, (stop - start, COLOUR_BINS), dtype=np.uint8),
            )
        )
    build_s = time.perf_counter() - t
    del category_of
    gc.collect()
    per_product = (rss_bytes() - before) / n
    print(
        f"\ninverted index: built in {build_s:.1f}s; resident memory {per_product:.0f} bytes/product "
        f"(code {CODE_BYTES} + colour {COLOUR_BINS} as uint8 + attribute columns + ids)"
    )

    sizes = idx.category_sizes()
    print("\ncategory-restricted queries vs the full scan (k=20, shortlist 200, re-ranked):")
    print(f"{'category':14s}{'products':>10s}{'MB scanned':>12s}{'p50 ms':>9s}{'p99 ms':>9s}")
    q_colour = rng.random(COLOUR_BINS)
    page, ranking = Narrowing.of(k=20), RankingConfig()
    for cat in (cats[0], cats[len(cats) // 2], cats[-1]):
        ts = []
        for q in queries:
            t = time.perf_counter()
            search_page(idx, Probe.of(q, q_colour, {"colour": "red"}, idx.columns), cat, page, ranking)
            ts.append(time.perf_counter() - t)
        print(
            f"{cat:14s}{sizes.get(cat, 0):10,d}{sizes.get(cat, 0) * CODE_BYTES / 1e6:12.1f}{pct(ts, 50):9.2f}{pct(ts, 99):9.2f}"
        )
    print(f"{'(full scan)':14s}{n:10,d}{scanned / 1e6:12.1f}{pct(t_faiss, 50):9.2f}{pct(t_faiss, 99):9.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "ram.npz"
        t = time.perf_counter()
        idx.save(snap)
        save_s = time.perf_counter() - t
        del idx
        gc.collect()
        t = time.perf_counter()
        InvertedIndex.load(snap, schema=schema)
        load_s = time.perf_counter() - t
        print(
            f"\nstart-up from the snapshot ({snap.stat().st_size / 1e6:.0f} MB): {load_s:.1f}s (writing it: {save_s:.1f}s)"
        )
    if args.store:
        from search.engine import load_ram_index

        t = time.perf_counter()
        ram = load_ram_index(args.store, use_snapshot=False)
        print(f"start-up from the LMDB store at {args.store} ({len(ram):,} products): {time.perf_counter() - t:.1f}s")


if __name__ == "__main__":
    main()
