"""Scale-out benchmark: Ray Data indexing and Milvus serving, each beside the embedded baseline.

Prints, from one run:
- indexing: the same synthetic dump (default 500 products) indexed by ``build_index`` (2 decode
  workers, the models in this process) and by ``--engine ray`` in local mode with 1 and 2 actors
  (2 CPUs): images/s, and the overhead ratio (local images/s over Ray's); Ray's own start-up is
  timed apart. The stores are compared byte for byte.
- serving: ``--n`` synthetic products (default 100k; clustered codes of the size the models make,
  read from the index's ``index.json``) in the embedded ``InvertedIndex`` and in a local Milvus
  (``BIN_FLAT``, ``BIN_IVF_FLAT`` at several nprobe): query p50/p99, recall@10 against the
  embedded answer, and resident memory per product (the embedded process' growth; the Milvus
  server's growth once the collection is loaded).

The models are those of ``--models`` when its attribute model and detector are there; otherwise
the tests' stand-ins, which cost nearly nothing, and the run says so.

Usage: python benchmarks/scale_out.py --models MODELS [--products 500] [--n 100000] [--part indexing|serving|all]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundation.schema import default_schema  # noqa: E402
from search.index import InvertedIndex  # noqa: E402
from search.narrowing import Narrowing  # noqa: E402
from search.ranking import Probe, RankingConfig  # noqa: E402
from search.rows import PhotoRows  # noqa: E402
from search.tiers import search_page  # noqa: E402


def rss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pct(xs, p) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, p))


def standin_describer(models_dir):
    """The tests' stand-ins for the attribute model and the detector, with the real appearance coder."""
    from appearance.model import AppearanceCoder
    from indexer.describe import Describer
    from tests.indexer_fakes import FakeDetector, FakePredictor

    return Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=AppearanceCoder.load(models_dir))


def indexing(models: Path, products: int, tmp: Path) -> int:
    import ray
    import torch

    from catalogues.synth import synthesize
    from indexer.bulk import BulkConfig, build_index
    from indexer.describe import Describer
    from indexer.ray_bulk import RayConfig, build_index_ray, load_describer, start_ray

    real = (models / "attributes.pt").is_file() and (models / "detector.pt").is_file()
    factory = functools.partial(load_describer, device="cpu") if real else standin_describer
    print(f"models: {models} ({'trained models' if real else 'stand-in attribute model and detector'})")
    dump = synthesize(tmp / "dump", products, 3, progress=False)
    torch.set_num_threads(2)
    describer = Describer.load(models) if real else standin_describer(models)
    runs = {}
    s = build_index(dump, models, tmp / "local", BulkConfig(workers=2, progress=False), describer=describer)
    runs["local (2 decode workers, 2 torch threads)"] = s
    t = time.perf_counter()
    start_ray(num_cpus=2, pythonpath=str(ROOT))
    ray_start = time.perf_counter() - t
    for actors in (1, 2):
        s = build_index_ray(
            dump,
            models,
            tmp / f"ray{actors}",
            BulkConfig(progress=False),
            RayConfig(actors=actors),
            describer_factory=factory,
        )
        runs[f"ray local mode, {actors} actor{'s' * (actors > 1)} (2 torch threads each)"] = s
    ray.shutdown()
    base = runs["local (2 decode workers, 2 torch threads)"]["images_per_s"]
    print(f"\nindexing {products} synthetic products (Ray start-up {ray_start:.1f}s, not counted below):")
    print(f"{'run':46s}{'indexed':>8s}{'seconds':>9s}{'images/s':>10s}{'overhead':>10s}")
    for name, s in runs.items():
        print(
            f"{name:46s}{s['indexed']:8d}{s['seconds']:9.1f}{s['images_per_s']:10.2f}{base / s['images_per_s']:9.2f}x"
        )
    same = all(_raw(tmp / f"ray{a}") == _raw(tmp / "local") for a in (1, 2))
    print(f"Ray stores byte-equal to the local one: {same}")
    with open(tmp / "local" / "index.json") as fh:
        return int(json.load(fh)["code_bits"])


def _raw(index: Path) -> dict:
    from indexer.store import Store

    with Store(index) as store, store.env.begin() as txn:
        return {bytes(k): bytes(v) for k, v in txn.cursor(db=store._products)}


def catalogue(n: int, code_bytes: int, bins: int, seed: int = 0) -> dict:
    """Products whose codes cluster (a look shares most bits) in a Zipf-like category skew."""
    rng = np.random.default_rng(seed)
    schema = default_schema()
    cats = list(schema.category_names)
    skew = 1.0 / np.arange(1, len(cats) + 1) ** 1.1
    centres = rng.integers(0, 2, (2000, code_bytes * 8), dtype=np.uint8)
    codes = np.empty((n, code_bytes), np.uint8)
    for lo in range(0, n, 20_000):
        hi = min(n, lo + 20_000)
        bits = centres[rng.integers(0, len(centres), hi - lo)] ^ (rng.random((hi - lo, code_bytes * 8)) < 0.1)
        codes[lo:hi] = np.packbits(bits.astype(np.uint8), axis=1)
    groups = list(schema.attribute_groups)
    picks = [rng.integers(0, len(g.values), n) for g in groups]
    return {
        "ids": [f"p{i:07d}" for i in range(n)],
        "categories": [cats[c] for c in rng.choice(len(cats), n, p=skew / skew.sum())],
        "attributes": [{g.name: g.values[p[i]] for g, p in zip(groups, picks)} for i in range(n)],
        "codes": codes,
        "colours": rng.dirichlet(np.ones(bins), n).astype(np.float16),
        "photos": [int(x) for x in rng.integers(1, 2**63, n, dtype=np.int64)],
        "prices": [float(p) for p in rng.integers(5, 200, n)],
    }


def timed(index, queries, data) -> tuple[list, list[float]]:
    """Each query's page of 10 through ``index`` (either backend, ranked alike), and its latency."""
    answers, ts = [], []
    page, ranking = Narrowing.of(k=10), RankingConfig()
    for q in queries:
        t = time.perf_counter()
        probe = Probe.of(data["codes"][q], data["colours"][q], data["attributes"][q], index.columns)
        r = search_page(index, probe, data["categories"][q], page, ranking)
        ts.append(time.perf_counter() - t)
        answers.append([h.id for h in r.hits])
    return answers, ts


def serving(n: int, code_bits: int, n_queries: int, nlist: int, tmp: Path) -> None:
    from search.milvus import MilvusIndex, insert_rows, product_rows
    from search.milvus_export import CollectionSpec, build_vector_index, create_collection
    from search.milvus_local import local_milvus

    code_bytes, bins = code_bits // 8, 132
    print(f"\nserving {n:,} synthetic products, {code_bits}-bit codes (the index's code_bits), k=10, shortlist 200:")
    data = catalogue(n, code_bytes, bins)
    rng = np.random.default_rng(1)
    queries = rng.choice(n, n_queries, replace=False)
    keys = ("ids", "categories", "attributes", "codes", "colours", "photos", "prices")
    gc.collect()
    before = rss()
    ram = InvertedIndex(code_bytes=code_bytes, colour_bins=bins)
    for lo in range(0, n, 20_000):
        ram.add(PhotoRows(*[data[k][lo : lo + 20_000] for k in keys]))
    ram_bytes = (rss() - before) / n
    shards = ram._shards.values()
    arrays = sum(
        s.index.ntotal * code_bytes + sum(a.nbytes for a in (s.ids, s.colours, s.values, s.photos, s.prices))
        for s in shards
    )
    exact, ts = timed(ram, queries, data)
    note = f"arrays; the process grew {ram_bytes:.0f} B/product"
    rows = [("embedded InvertedIndex (faiss)", pct(ts, 50), pct(ts, 99), 1.0, 1.0, arrays / n, note)]
    with local_milvus(tmp / "milvus") as uri:
        pid = next(p for p in os.listdir("/proc") if p.isdigit() and _is_milvus(p, tmp / "milvus"))
        idle = rss(pid)
        for index_type, probes in (("BIN_FLAT", [16]), ("BIN_IVF_FLAT", [8, 32, 128])):
            spec = CollectionSpec(code_bits, bins, collection="bench", index_type=index_type)
            target = create_collection(uri, spec, replace=True)
            t = time.perf_counter()
            groups = [g.name for g in default_schema().attribute_groups]
            for lo in range(0, n, 5000):
                part = PhotoRows(*[data[k][lo : lo + 5000] for k in keys])
                insert_rows(target, product_rows(part, [{}] * len(part), groups))
            build_vector_index(target, index_type=index_type, nlist=nlist)
            load_s = time.perf_counter() - t
            time.sleep(2)
            per_product = (rss(pid) - idle) / n
            for nprobe in probes:
                milvus = MilvusIndex(uri, collection="bench", nprobe=nprobe)
                got, ts = timed(milvus, queries, data)
                recall = np.mean([len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(got, exact)])
                same = np.mean([a == b for a, b in zip(got, exact)])
                name = f"Milvus {index_type}" + (f" nlist {nlist} nprobe {nprobe}" if index_type != "BIN_FLAT" else "")
                rows.append((name, pct(ts, 50), pct(ts, 99), recall, same, per_product, f"loaded in {load_s:.0f}s"))
            target.drop()
            time.sleep(2)
    print(f"{'backend':44s}{'p50 ms':>8s}{'p99 ms':>8s}{'R@10':>7s}{'same list':>10s}{'bytes/product':>15s}")
    for name, p50, p99, recall, same, per, note in rows:
        print(f"{name:44s}{p50:8.1f}{p99:8.1f}{recall:7.3f}{same:10.0%}{per:15.0f}  {note}")
    print(
        "(bytes/product: Milvus' server's resident growth with the collection loaded; embedded: its arrays "
        "(codes, float16 colours, attribute columns, ids, photo keys, prices))"
    )


def _is_milvus(pid: str, base: Path) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(str(base.resolve()).encode())
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--products", type=int, default=500, help="products in the indexing dump")
    ap.add_argument("--n", type=int, default=100_000, help="synthetic products served")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nlist", type=int, default=256, help="BIN_IVF_FLAT clusters")
    ap.add_argument("--part", choices=("indexing", "serving", "all"), default="all")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)  # one query, one core, in both backends' clients
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        code_bits = None
        if args.part in ("indexing", "all"):
            code_bits = indexing(args.models, args.products, tmp)
        if args.part in ("serving", "all"):
            if code_bits is None:
                from appearance.model import AppearanceCoder

                code_bits = AppearanceCoder.load(args.models).code_bytes * 8
            serving(args.n, code_bits, args.queries, args.nlist, tmp)


if __name__ == "__main__":
    main()
