"""Live re-indexing under load: how long a served index takes to load anew, and what searches see.

A store of ``--n`` synthetic products (random codes and colours, a product in ``--multi`` of them
with 3 photos) is served by a ``SearchEngine``; shopper threads search it without pause (re-runs
by query id: the RAM index and the ranking, no model) while another process writes a bulk run into
the same directory (``--changed`` products replaced, as many new, as many deleted) and marks it
finished, and the engine's watcher (``webui.reload.IndexWatcher``) loads and swaps the new index.

Prints, in one run: the load (building the new RAM index beside the old) and swap (the pointer
under the read lock) times; searches served and failed while the new index was loaded; search
latency p50/p99 before the run, while loading and after the swap, side by side.

Usage: python benchmarks/reindex_swap.py [--n 100000] [--threads 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.schema import default_schema  # noqa: E402
from indexer.description import Description  # noqa: E402
from indexer.store import Photo, ProductRecord, Store  # noqa: E402

CODE_BYTES, COLOUR_BINS = 232, 132  # as benchmarks/search_bench.py


def records(start: int, n: int, *, seed: int, multi: float = 0.0):
    """``n`` synthetic products from id ``start`` (the same ids and contents for the same seed)."""
    rng = np.random.default_rng(seed)
    cats = list(default_schema().category_names)[:8]

    def description():
        return Description(
            category=cats[int(rng.integers(len(cats)))],
            attributes={},
            categories=[],
            roi=(0, 0, 100, 100),
            fallback=False,
            code=rng.integers(0, 256, CODE_BYTES, dtype=np.uint8),
            colour=rng.random(COLOUR_BINS).astype(np.float16),
        )

    for i in range(start, start + n):
        more = tuple(Photo("", f"{i:016x}{k}", description()) for k in range(2)) if rng.random() < multi else ()
        first = Photo("", f"{i:016x}", description())
        yield ProductRecord(f"p{i:07d}", f"product {i}", "", 10.0, None, (first, *more), f"h{i}")


_WRITER = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.reindex_swap import records
from indexer.store import Store
with Store({index!r}, readonly=False) as store:
    changed = list(records(0, {changed}, seed=1))  # replaced: new codes under old ids
    new = list(records({n}, {changed}, seed=2))
    store.put(changed + new)
    store.delete([f"p{{i:07d}}" for i in range({n} - {changed}, {n})])
    store.mark_built()
"""


class NoModels:
    """What the engine reads of a describer, without models: re-runs by query id never describe."""

    ranking = None  # the default weights
    signature = None  # the bulk run changes no models
    device = "cpu"

    def __init__(self):
        from indexer.colour import ColourConfig

        self.colour = ColourConfig()


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=5_000)
    ap.add_argument("--multi", type=float, default=0.1, help="share of products with 3 photos")
    ap.add_argument("--threads", type=int, default=3)
    args = ap.parse_args()
    import faiss

    from search.answering import Seen, SeenGarment
    from search.engine import SearchEngine, load_ram_index
    from search.query import Query
    from webui.reload import IndexWatcher

    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        t0 = time.perf_counter()
        with Store(index, readonly=False) as store:
            store.write_info({"code_bytes": CODE_BYTES, "colour_bins": COLOUR_BINS})
            batch = []
            for r in records(0, args.n, seed=0, multi=args.multi):
                batch.append(r)
                if len(batch) == 10_000:
                    store.put(batch)
                    batch.clear()
            store.put(batch)
            store.mark_built()
        print(f"store of {args.n} products written in {time.perf_counter() - t0:.1f}s")
        ram = load_ram_index(index, use_snapshot=False)
        engine = SearchEngine(describer=NoModels(), store=Store(index, readonly=True), index=ram)
        first = next(engine.store.iter_records()).photos[0].description
        qid = engine.recent.put(Seen("guided", (SeenGarment((first,), ((first.category, 1.0),)),), ()))
        again = Query.rerun(qid, k=20)
        served: list[tuple[float, float]] = []
        errors: list[str] = []
        stop = threading.Event()

        def shopper():
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    engine.search(again)
                except Exception as exc:  # noqa: BLE001 - counted and printed
                    errors.append(repr(exc))
                served.append((t, (time.perf_counter() - t) * 1e3))

        threads = [threading.Thread(target=shopper, daemon=True) for _ in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(3)  # a baseline window of searches before the run
        watcher = IndexWatcher(engine, 0.05).start()
        t_write = time.perf_counter()
        script = _WRITER.format(
            root=str(Path(__file__).resolve().parents[1]), index=str(index), n=args.n, changed=args.changed
        )
        subprocess.run([sys.executable, "-c", script], check=True)
        t_written = time.perf_counter()
        while not engine.reloads:
            time.sleep(0.01)
        t_swapped = time.perf_counter()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        watcher.stop()
        engine.close()
    reload = engine.reloads[-1]
    before = [ms for t, ms in served if t < t_write]
    loading = [ms for t, ms in served if t_written <= t < t_swapped]
    after = [ms for t, ms in served if t >= t_swapped]
    print(
        f"bulk run written in {t_written - t_write:.1f}s; new index loaded in {reload['load_s']:.2f}s "
        f"({reload['was']} -> {reload['products']} products, {reload['photos']} photos), "
        f"swapped in {reload['swap_ms']:.3f} ms"
    )
    print(f"searches: {len(served)} in all, {len(loading)} while the new index loaded, {len(errors)} failed")
    print(f"{'':24} {'searches':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("before the run", before), ("while loading", loading), ("after the swap", after)):
        print(f"{name:24} {len(values):>9} {pct(values, 50):>8.2f} {pct(values, 99):>8.2f}")
    if errors:
        print("first error:", errors[0])


if __name__ == "__main__":
    main()
