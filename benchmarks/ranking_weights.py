"""Choose the ranking weights (w_appearance, w_colour, w_shared) on the shared clothing val photos.

The catalogue is the clothing photos of a split, indexed with the given models (as in
``fashion-search evaluate retrieval``); the queries are its composed shop scenes: each catalogue
photo transformed and pasted with 1-2 other garments, the target being its source product.
Every query is described once per option (guided with its true category, rectangle with the
pasted box); only the ranking is redone for each grid point, so the grid is cheap.

The queries are split in two halves by a seeded draw: the weights are chosen on the first
(recall@10, options averaged; ties go to the smaller weights) and reported on both, beside the
current defaults, so the figure on the second half is not fitted.

Usage:
    python benchmarks/ranking_weights.py --clothing ../shared/datasets/clothing --models MODELS \\
        --out .fashion-search/ranking [--split val] [--queries 300]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = {
    "w_appearance": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "w_colour": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "w_shared": (0.0, 0.25, 0.5),
}
OPTIONS = ("guided", "rectangle")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clothing", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from benchmarks.retrieval_real import describer_without_detector
    from evaluation.metrics import QueryImages
    from evaluation.queries import shop_queries
    from evaluation.retrieval import (
        RetrievalEvalConfig,
        _truth_categories,
        build_catalogue_index,
        convert_catalogue,
        open_engine,
    )
    from foundation.dump import read_dump
    from foundation.schema import default_schema
    from search.narrowing import Narrowing
    from search.ranking import Probe, RankingConfig
    from search.tiers import search_page

    schema = default_schema()
    out = Path(args.out)
    t0 = time.perf_counter()
    models = Path(args.models)
    describer = describer_without_detector(models)  # None: the models' own detector
    dump = convert_catalogue(Path(args.clothing), out / "catalogue", args.split)
    products = list(read_dump(dump, schema=schema, check_images=False))
    category_of = _truth_categories(products, schema)
    index_dir = build_catalogue_index(dump, models, out / "index", describer=describer)
    engine = open_engine(index_dir, describer=describer)
    t_index = time.perf_counter() - t0

    t0 = time.perf_counter()
    images = QueryImages()
    queries = shop_queries(products, category_of, images, RetrievalEvalConfig(queries=args.queries, seed=args.seed))
    described = []  # (query, option, category, probe)
    for q in queries:
        image = images.get(q.image)
        for option in OPTIONS:
            box = q.box if option == "rectangle" else None
            guide = q.category if option == "guided" else None
            (d,) = engine.describer.describe([image], guides=[guide], boxes=[box])
            attributes = {g: v for g, (v, _p) in d.attributes.items()}
            described.append((q, option, d.category, Probe.of(d.code, d.colour, attributes, engine.index.columns)))
    t_describe = time.perf_counter() - t0
    halves = np.random.default_rng([args.seed, 11]).permutation(len(queries)) % 2
    half_of = {q.id: int(h) for q, h in zip(queries, halves)}

    page = Narrowing.of(k=args.k)

    def recalls(ranking: RankingConfig) -> dict[tuple[int, str], float]:
        hits: dict[tuple[int, str], list[float]] = {}
        for q, option, category, probe in described:
            result = search_page(engine.index, probe, category, page, ranking)
            hits.setdefault((half_of[q.id], option), []).append(float(q.target in {h.id for h in result.hits}))
        return {key: float(np.mean(v)) for key, v in hits.items()}

    t0 = time.perf_counter()
    table = []
    for wa, wc, ws in itertools.product(*GRID.values()):
        if wa == wc == ws == 0:
            continue
        r = recalls(RankingConfig(w_appearance=wa, w_colour=wc, w_shared=ws))
        tune = np.mean([r[(0, o)] for o in OPTIONS])
        table.append((tune, -(wa + wc + ws), (wa, wc, ws), r))
    t_grid = time.perf_counter() - t0
    table.sort(key=lambda row: (row[0], row[1]), reverse=True)
    default = RankingConfig()
    current = recalls(default)
    best = table[0]

    n0 = int((halves == 0).sum())
    print(
        f"ranking weights on {len(queries)} shop scenes of the clothing {args.split} split "
        f"({n0} to choose, {len(queries) - n0} held out), catalogue {len(products)} photos"
    )
    print(f"index {t_index:.0f}s, describe {t_describe:.0f}s, grid of {len(table)} weightings {t_grid:.0f}s")
    head = f"{'weights (appearance, colour, shared)':40s}" + "".join(
        f"{f'R@{args.k} {o} h{h}':>18s}" for h in (0, 1) for o in OPTIONS
    )
    print(head)

    def row(name, r):
        print(f"{name:40s}" + "".join(f"{r[(h, o)]:18.3f}" for h in (0, 1) for o in OPTIONS))

    row(f"defaults {(default.w_appearance, default.w_colour, default.w_shared)}", current)
    for _tune, _neg, w, r in table[:5]:
        row(f"grid {w}", r)
    print("best on half 0 for each appearance weight:")
    for wa in GRID["w_appearance"]:
        tune, _neg, w, r = next(t for t in table if t[2][0] == wa)
        row(f"grid {w}", r)
    print(f"chosen on half 0: w_appearance={best[2][0]} w_colour={best[2][1]} w_shared={best[2][2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
