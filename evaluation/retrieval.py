"""Retrieval evaluation: the whole search judged on real photos, beside simpler systems.

``evaluate_retrieval`` indexes the clothing photos of one split as the catalogue (titles as a
seller would type them from the label) and runs two query sets through the search engine:

shop
    each of M catalogue photos is transformed and pasted with 1-2 other garments onto a
    background (``catalogues.scenes``); the query's target is its source product. Recall@1 and
    recall@10 for option 1 (auto), option 2 (guided with the true category) and option 3
    (rectangle = the pasted box).
street
    the ccp photos of the split; every garment box whose label maps to a catalogue category is a
    query for options 2 and 3, and each photo as a whole is a query for option 1, right when a
    result's category is one of the garments present. Category precision@10.

On the same queries, baselines a shop could use instead:
    colour only        the HSV histogram of the whole query photo against the catalogue's whole
                       photos, no category restriction;
    whole-image code   the binary appearance code of the whole photo, Hamming distance over the
                       whole catalogue, no attributes, no ROI;
    float ...          each option's own category, attributes and ROI, with the appearance
                       coder's float features (cosine distance) in place of the Hamming distance
                       of the binary codes, ranked by the index's own weighted sum.

Outputs ``metrics.json`` and a self-contained ``index.html`` (``evaluation.report``).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from evaluation.baselines import Searcher, catalogue_features, run_baselines
from evaluation.metrics import (
    OPTIONS,
    SHOP,
    STREET_GARMENT,
    STREET_PHOTO,
    GarmentGroup,
    Query,
    QueryImages,
    Ranking,
    Run,
    summarise,
    timing_summary,
)
from evaluation.queries import shop_queries, street_queries
from evaluation.tables import case_strips, curve_plots, result_tables, timing_tables
from foundation.schema import Schema, default_schema
from search.query import Query as SearchQuery

logger = logging.getLogger(__name__)


# -- the search engine's options ---------------------------------------------------------------
def options_for(query: Query) -> tuple[str, ...]:
    return {SHOP: OPTIONS, STREET_GARMENT: ("guided", "rectangle"), STREET_PHOTO: ("auto",)}[query.set]


def run_engine(
    engine, run: Run, images: QueryImages, *, depth: int = 20, progress: bool = True
) -> dict[tuple[str, str], dict]:
    """Each query through ``engine.search`` with each of its options; returns the query descriptions.

    The descriptions (``response["query"]``, keyed by (option, query id)) feed the float baseline,
    which reuses each option's category, attributes and ROI.
    """
    described: dict[tuple[str, str], dict] = {}
    for q in tqdm(run.queries, desc="queries", unit="query", disable=not progress):
        image = images.get(q.image)
        for option in options_for(q):
            response = engine.search(
                SearchQuery.search(
                    image,
                    option,
                    category=q.category if option == "guided" else None,
                    box=q.box if option == "rectangle" else None,
                    k=depth,
                )
            ).to_json()
            d = response["query"]
            run.put(
                option,
                q.id,
                Ranking(
                    ids=[r["id"] for r in response["results"]],
                    category=d["category"],
                    roi=tuple(float(v) for v in d["roi"]),
                    fallback=bool(d["fallback"]),
                    timings_ms={name: float(ms) for name, ms in d["timings_ms"].items()},
                    garments=[
                        GarmentGroup(tuple(float(v) for v in g["roi"]), g["category"], [r["id"] for r in g["results"]])
                        for g in response["garments"]
                        if not g["fallback"]  # the whole photo is no garment offered
                    ],
                ),
            )
            described[(option, q.id)] = d
    return described


# -- the whole evaluation -----------------------------------------------------------------------
@dataclass(frozen=True)
class RetrievalEvalConfig:
    split: str = "val"  # the clothing split indexed as the catalogue, and the ccp split queried
    queries: int = 300  # shop queries (composed scenes); 0: the street set alone
    seed: int = 0
    k: int = 10  # the cut-off of the headline metrics
    depth: int = 20  # results kept per query, for the curves
    cases: int = 4  # worst and best queries shown per set
    min_street_side: int = 24
    min_street_pixels: int = 1000
    batch: int = 16
    device: str = "cpu"
    # Torch threads while searching: queries come one image at a time, and on a shared 2-core CPU
    # two threads spun against each other (5.3 s a search with two, 0.11 s with one, measured).
    threads: int = 1

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.queries < 0:
            raise ValueError(f"--queries must be 0 (street set only) or more, got {self.queries}")
        if not 1 <= self.k <= self.depth:
            raise ValueError(f"k must be from 1 to depth ({self.depth}), got {self.k}")
        if self.split not in ("train", "val"):
            raise ValueError(f"--split must be train or val, got {self.split!r}")


@dataclass(frozen=True)
class RetrievalInputs:
    """What the evaluation reads: the clothing dataset (the catalogue), the ccp one (the street
    queries) and the models directory (``metrics.json``'s ``inputs``)."""

    clothing: Path
    ccp: Path
    models: Path

    def __post_init__(self):
        for name in ("clothing", "ccp", "models"):
            object.__setattr__(self, name, Path(getattr(self, name)))


def _truth_categories(products, schema: Schema) -> dict[str, str]:
    """Each catalogue product's true category, from the label the converter kept."""
    out = {}
    for p in products:
        category = p.attributes.get(Schema.CATEGORY) if p.attributes else None
        if not category and p.boxes:
            category = p.boxes[0].category
        if category:
            out[p.id] = schema.check_category(category)
    return out


class CoderFeaturizer:
    """The baselines' features from the indexer's own appearance coder and colour histogram.

    ``floats`` are the coder's pooled GoogLeNet activations centred by its catalogue median:
    exactly what the binary code thresholds at zero, before thresholding.
    """

    def __init__(self, coder, colour_config, *, batch: int = 16):
        self.coder = coder
        self.colour_config = colour_config
        self.batch = batch

    def floats(self, images: Sequence[Image.Image]) -> np.ndarray:
        feats = self.coder.features(list(images), batch_size=self.batch)
        return (feats - self.coder.median).astype(np.float32) if self.coder.median is not None else feats

    def codes(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.coder.encode(list(images), batch_size=self.batch)

    def colours(self, images: Sequence[Image.Image]) -> np.ndarray:
        from indexer.colour import colour_histogram

        return np.stack([colour_histogram(im, self.colour_config) for im in images]).astype(np.float32)


def convert_catalogue(clothing: Path, out: Path, split: str, *, progress: bool = True) -> Path:
    """The catalogue dump: the clothing photos of ``split``, titled from their labels (``catalogues.convert``)."""
    from catalogues.convert import convert_clothing

    dump, counts = convert_clothing(clothing, out, split=split, progress=progress)
    logger.info("catalogue: %d products, %d photos left out (no usable label)", counts["products"], counts["left_out"])
    if not counts["products"]:
        raise ValueError(f"no products in the {split} split of {clothing}: nothing to index")
    return dump


def load_featurizer(describer, *, batch: int = 16) -> CoderFeaturizer:
    """The baselines' features from a loaded ``indexer.describe.Describer``'s coder and colour settings."""
    return CoderFeaturizer(describer.coder, describer.colour, batch=batch)


def build_catalogue_index(
    dump: Path, models: Path, index_dir: Path, *, describer=None, device: str = "cpu", progress: bool = True
) -> Path:
    """Index the catalogue dump with the bulk indexer (which resumes an interrupted run)."""
    from indexer.bulk import BulkConfig, build_index

    summary = build_index(dump, models, index_dir, BulkConfig(device=device, progress=progress), describer=describer)
    logger.info("catalogue index: %s", {k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    return index_dir


def open_engine(index_dir: Path, *, describer=None, device: str = "cpu"):
    """The search engine over the catalogue index; ``describer``: a ready one instead of the index's models."""
    from indexer.store import Store
    from search.engine import SearchEngine, load_ram_index

    if describer is None:
        return SearchEngine.open(index_dir, device=device)
    index = load_ram_index(index_dir)  # opens and closes the store itself: LMDB allows one open per process
    return SearchEngine(describer=describer, store=Store(index_dir, readonly=True), index=index)


def evaluate_retrieval(
    inputs: RetrievalInputs,
    out: str | Path,
    *,
    config: RetrievalEvalConfig | None = None,
    progress: bool = True,
    describer=None,
    compose=None,
) -> dict:
    """The whole evaluation (module docstring); returns what ``metrics.json`` holds.

    Args:
        describer: a ready ``indexer.describe.Describer`` used instead of loading the models (tests).
        compose: the scene composer (default: ``catalogues.scenes``'s).
    """
    cfg = config or RetrievalEvalConfig()
    out = Path(out)
    for what, path in (("clothing", inputs.clothing / "images.csv"), ("ccp", inputs.ccp / "annotations.jsonl")):
        if not path.is_file():
            raise FileNotFoundError(f"--{what} {path.parent} does not have the {what} layout: no {path.name}")
    if not inputs.models.is_dir():
        raise FileNotFoundError(f"no models directory at {inputs.models}")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _evaluate(inputs, out, cfg, progress, describer, compose)
    finally:
        torch.set_num_threads(threads)


def _evaluate(inputs: RetrievalInputs, out: Path, cfg: RetrievalEvalConfig, progress: bool, describer, compose) -> dict:
    from evaluation.report import Report, write_report
    from foundation.dump import read_dump

    clothing, ccp, models = inputs.clothing, inputs.ccp, inputs.models
    schema = default_schema()

    stages: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    dump = convert_catalogue(clothing, out / "catalogue", cfg.split, progress=progress)
    products = list(read_dump(dump, schema=schema, check_images=False))
    category_of = _truth_categories(products, schema)
    image_of = {p.id: p.photos[0].path for p in products}
    stages["catalogue dump"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index_dir = build_catalogue_index(
        dump, models, out / "index", describer=describer, device=cfg.device, progress=progress
    )
    stages["catalogue index"] = time.perf_counter() - t0

    engine = open_engine(index_dir, describer=describer, device=cfg.device)
    try:
        t0 = time.perf_counter()
        images = QueryImages()
        shop = (
            shop_queries(products, category_of, images, cfg, compose=compose, progress=progress) if cfg.queries else []
        )
        street = street_queries(ccp, set(category_of.values()), images, cfg, schema=schema)
        run = Run(shop + street)
        stages["query sets"] = time.perf_counter() - t0
        logger.info(
            "%d shop queries, %d street garments, %d street photos",
            len(shop),
            sum(q.set == STREET_GARMENT for q in street),
            sum(q.set == STREET_PHOTO for q in street),
        )

        t0 = time.perf_counter()
        described = run_engine(engine, run, images, depth=cfg.depth, progress=progress)
        stages["engine queries"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        featurizer = load_featurizer(engine.describer, batch=cfg.batch)
        records = [
            (r.id, image_of[r.id], r.photos[0].description.roi) for r in engine.store.iter_records() if r.id in image_of
        ]
        catalogue = catalogue_features(records, featurizer, progress=progress)
        stages["catalogue baseline features"] = time.perf_counter() - t0
        stages.update(
            run_baselines(
                run,
                images,
                described,
                catalogue,
                Searcher(engine.index, engine.ranking, cfg.depth),
                progress=progress,
            )
        )
    finally:
        engine.close()

    metrics = summarise(run, category_of, k=cfg.k, depth=cfg.depth)
    stages["total"] = time.perf_counter() - t_start
    result = {
        "config": asdict(cfg),
        "inputs": {"clothing": str(clothing), "ccp": str(ccp), "models": str(models)},
        "catalogue": {
            "products": len(products),
            "indexed": len(engine.index),
            "categories": dict(sorted(Counter(category_of.values()).items())),
        },
        "queries": {s: sum(q.set == s for q in run.queries) for s in (SHOP, STREET_GARMENT, STREET_PHOTO)},
        "metrics": metrics,
        "timings_ms": timing_summary(run),
        "stages_s": {name: round(s, 2) for name, s in stages.items()},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "device": cfg.device,
        },
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1), encoding="utf-8")

    report = Report(
        f"Retrieval evaluation: {clothing.name} {cfg.split} catalogue, {ccp.name} street photos",
        summary=[
            f"catalogue: {len(products)} products of the {cfg.split} split, {len(engine.index)} indexed; models {models}",
            f"queries: {len(shop)} composed shop scenes (seed {cfg.seed}), "
            f"{result['queries'][STREET_GARMENT]} street garments in {result['queries'][STREET_PHOTO]} street photos",
            f"run time {stages['total']:.0f} s on {result['machine']['processor']} with {torch.get_num_threads()} threads",
        ],
        tables=[*result_tables(metrics, k=cfg.k), *timing_tables(run, stages)],
        plots=curve_plots(metrics),
        strips=case_strips(run, images, image_of, category_of, k=cfg.k, n=cfg.cases),
    )
    write_report(report, out)
    return result


def retrieval_command(args) -> int:
    """``fashion-search evaluate retrieval``: run it and print the headline tables."""
    cfg = RetrievalEvalConfig(split=args.split, queries=args.queries, seed=args.seed, device=args.device)
    result = evaluate_retrieval(RetrievalInputs(args.clothing, args.ccp, args.models), args.out, config=cfg)
    for table in result_tables(result["metrics"], k=cfg.k):
        print(f"\n{table.title}")
        print("  ".join(f"{c:>14}" for c in table.columns[:-1]))
        for row in table.rows:
            print(
                "  ".join(f"{v:>14.3f}" if isinstance(v, float) else f"{'-' if v is None else v:>14}" for v in row[:-1])
            )
    print(f"\nrun time {result['stages_s']['total']:.0f} s; report: {Path(args.out) / 'index.html'}")
    return 0
