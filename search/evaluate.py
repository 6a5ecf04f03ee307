"""Retrieval evaluation: the whole search judged on real photos, beside simpler systems.

``evaluate_retrieval`` indexes the clothing photos of one split as the catalogue (titles as a
seller would type them from the label) and runs two query sets through the search engine:

shop
    each of M catalogue photos is transformed and pasted with 1-2 other garments onto a
    background (``indexer.scenes``); the query's target is its source product. Recall@1 and
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

Outputs ``metrics.json`` and a self-contained ``index.html`` (``search.report``).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Mapping, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.retrieval import retrieval_precision, retrieval_recall
from tqdm import tqdm

from attributes.schema import Schema, default_schema

logger = logging.getLogger(__name__)

SHOP, STREET_GARMENT, STREET_PHOTO = "shop", "street-garment", "street-photo"
OPTIONS = ("auto", "guided", "rectangle")
COLOUR_ONLY, WHOLE_CODE = "colour only", "whole-image code"


# -- metrics --------------------------------------------------------------------------------
def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _rank_scores(n: int) -> torch.Tensor:
    # Rank order as descending scores: the list's first item scores highest.
    return torch.arange(n, 0, -1, dtype=torch.float32)


def recall_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 when ``target`` is among the first ``k`` of ``ranked``, else 0.0 (one relevant product)."""
    k = _check_k(k)
    relevant = [pid == target for pid in ranked]
    preds = _rank_scores(len(ranked))
    if not any(relevant):
        # Not returned at all: it still counts as the one relevant product.
        relevant.append(True)
        preds = torch.cat([preds, torch.tensor([-1.0])])
    return round(float(retrieval_recall(preds, torch.tensor(relevant), top_k=k)), 6)


def precision_at_k(labels: Sequence[str], accepted: Collection[str], k: int) -> float:
    """Share of the first ``k`` results whose label is in ``accepted``; missing results count as wrong."""
    k = _check_k(k)
    relevant = [label in accepted for label in labels]
    relevant += [False] * max(0, k - len(relevant))
    if not any(relevant):
        return 0.0
    return round(float(retrieval_precision(_rank_scores(len(relevant)), torch.tensor(relevant), top_k=k)), 6)


def target_rank(ranked: Sequence[str], target: str) -> int | None:
    """1-based rank of ``target`` in ``ranked``; None when it was not returned."""
    ranked = list(ranked)
    return ranked.index(target) + 1 if target in ranked else None


# -- queries and what the systems returned ------------------------------------------------------
@dataclass(frozen=True)
class Query:
    id: str
    set: str  # SHOP, STREET_GARMENT or STREET_PHOTO
    image: str  # key of the query photo (see QueryImages)
    category: str | None  # the true category: option 2's pick; None for a whole street photo
    box: tuple[float, float, float, float] | None  # the garment's box: option 3's rectangle
    target: str | None  # shop: the source product's id
    accepted: frozenset[str]  # result categories that count as right


@dataclass
class Ranking:
    """What one system returned for one query."""

    ids: list[str]
    category: str | None = None  # the category the system searched in (None: no restriction)
    roi: tuple[float, float, float, float] | None = None
    fallback: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """Every system's rankings on a set of queries: ``rankings[system][query id]``."""

    queries: list[Query]
    rankings: dict[str, dict[str, Ranking]] = field(default_factory=dict)

    def put(self, system: str, query_id: str, ranking: Ranking) -> None:
        self.rankings.setdefault(system, {})[query_id] = ranking

    def systems_for(self, query_set: str) -> list[str]:
        ids = {q.id for q in self.queries if q.set == query_set}
        return [s for s, r in self.rankings.items() if ids & r.keys()]


def query_scores(query: Query, ids: Sequence[str], category_of: Mapping[str, str], k: int) -> dict[str, float]:
    """The metrics of one ranked list: recall@1/k for a shop query, category precision@k for all."""
    labels = [category_of.get(pid, "") for pid in ids]
    scores = {f"P@{k}": precision_at_k(labels, query.accepted, k)}
    if query.target is not None:
        scores["R@1"] = recall_at_k(ids, query.target, 1)
        scores[f"R@{k}"] = recall_at_k(ids, query.target, k)
    return scores


def summarise(run: Run, category_of: Mapping[str, str], *, k: int = 10, depth: int = 20) -> dict:
    """Mean metrics per query set and system, with curves over k = 1..depth."""
    out: dict = {}
    ks = list(range(1, depth + 1))
    for query_set in (SHOP, STREET_GARMENT, STREET_PHOTO):
        queries = [q for q in run.queries if q.set == query_set]
        if not queries:
            continue
        block: dict = {"queries": len(queries), "systems": {}}
        for system in run.systems_for(query_set):
            got = run.rankings[system]
            answered = [q for q in queries if q.id in got]
            per = [query_scores(q, got[q.id].ids, category_of, k) for q in answered]
            row = {m: round(float(np.mean([p[m] for p in per])), 4) for m in per[0]}
            row["queries"] = len(answered)
            labels = [[category_of.get(pid, "") for pid in got[q.id].ids] for q in answered]
            row["precision_curve"] = [round(float(np.mean([precision_at_k(l, q.accepted, kk) for l, q in zip(labels, answered)])), 4)
                                      for kk in ks]
            if query_set == SHOP:
                row["recall_curve"] = [round(float(np.mean([recall_at_k(got[q.id].ids, q.target, kk) for q in answered])), 4)
                                       for kk in ks]
                ranks = [target_rank(got[q.id].ids, q.target) for q in answered]
                row["not_found"] = sum(r is None for r in ranks)
            fallbacks = [got[q.id].fallback for q in answered]
            if any(fallbacks):
                row["fallback_share"] = round(float(np.mean(fallbacks)), 4)
            cats = [(q, got[q.id].category) for q in answered if q.category and got[q.id].category]
            if cats:
                row["category_right"] = round(float(np.mean([q.category == c for q, c in cats])), 4)
            block["systems"][system] = row
        out[query_set] = block
    return out


def timing_summary(run: Run) -> dict:
    """Per system: median and 90th percentile of each timed stage (ms), over every query."""
    out = {}
    for system, got in run.rankings.items():
        stages: dict[str, list[float]] = {}
        for r in got.values():
            for name, ms in r.timings_ms.items():
                stages.setdefault(name, []).append(float(ms))
        if stages:
            out[system] = {name: {"median": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2),
                                  "n": len(v)} for name, v in stages.items()}
    return out


def cases(run: Run, system: str, query_set: str, category_of: Mapping[str, str], *, k: int, n: int) -> tuple[list[Query], list[Query]]:
    """The ``n`` worst and ``n`` best queries of a set for one system (ties broken by query id)."""
    got = run.rankings.get(system, {})
    scored = []
    for q in run.queries:
        if q.set != query_set or q.id not in got:
            continue
        s = query_scores(q, got[q.id].ids, category_of, k)
        rank = target_rank(got[q.id].ids, q.target) if q.target else None
        # Worse first: target missing or far down, then fewer right categories.
        key = (-(rank if rank is not None else math.inf) if q.target else 0, s[f"P@{k}"], q.id)
        scored.append((key, q))
    scored.sort(key=lambda t: t[0])
    worst = [q for _, q in scored[:n]]
    best = [q for _, q in reversed(scored[-n:]) if q not in worst]
    return worst, best


class QueryImages:
    """Query photos by key: files are opened when asked for, composed scenes are held as PNG bytes."""

    def __init__(self):
        self._paths: dict[str, Path] = {}
        self._encoded: dict[str, bytes] = {}
        self._last: tuple[str, Image.Image] | None = None  # street garments of one photo come in a row

    def add_path(self, key: str, path: str | Path) -> None:
        self._paths[key] = Path(path)

    def add_image(self, key: str, image: Image.Image) -> None:
        import io

        buf = io.BytesIO()
        image.convert("RGB").save(buf, "PNG")
        self._encoded[key] = buf.getvalue()

    def __contains__(self, key: str) -> bool:
        return key in self._paths or key in self._encoded

    def get(self, key: str) -> Image.Image:
        from indexer.images import load_image

        if self._last and self._last[0] == key:
            return self._last[1]
        if key in self._encoded:
            image = load_image(self._encoded[key])
        elif key in self._paths:
            image = load_image(self._paths[key])
        else:
            raise KeyError(f"no query image {key!r}")
        self._last = (key, image)
        return image


# -- the search engine's options ---------------------------------------------------------------
def options_for(query: Query) -> tuple[str, ...]:
    return {SHOP: OPTIONS, STREET_GARMENT: ("guided", "rectangle"), STREET_PHOTO: ("auto",)}[query.set]


def run_engine(engine, run: Run, images: QueryImages, *, depth: int = 20, progress: bool = True) -> dict[tuple[str, str], dict]:
    """Each query through ``engine.search`` with each of its options; returns the query descriptions.

    The descriptions (``response["query"]``, keyed by (option, query id)) feed the float baseline,
    which reuses each option's category, attributes and ROI.
    """
    described: dict[tuple[str, str], dict] = {}
    for q in tqdm(run.queries, desc="queries", unit="query", disable=not progress):
        image = images.get(q.image)
        for option in options_for(q):
            response = engine.search(
                image, option,
                category=q.category if option == "guided" else None,
                box=q.box if option == "rectangle" else None,
                k=depth,
            )
            d = response["query"]
            run.put(option, q.id, Ranking(
                ids=[r["id"] for r in response["results"]],
                category=d["category"],
                roi=tuple(float(v) for v in d["roi"]),
                fallback=bool(d["fallback"]),
                timings_ms={name: float(ms) for name, ms in d["timings_ms"].items()},
            ))
            described[(option, q.id)] = d
    return described


# -- baselines ----------------------------------------------------------------------------------
class Featurizer(Protocol):
    """What the baselines compute from images: binary codes, float features and colour histograms."""

    batch: int

    def floats(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, d) float32, before binarizing

    def codes(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, code bytes) uint8, packed bits

    def colours(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, bins) histograms


def colour_rankings(query_colours: np.ndarray, catalogue_colours: np.ndarray, ids: Sequence[str], depth: int) -> list[list[str]]:
    """Baseline: the catalogue by L1 distance between whole-photo colour histograms (faiss, exact)."""
    import faiss

    q = np.ascontiguousarray(query_colours, np.float32)
    c = np.ascontiguousarray(catalogue_colours, np.float32)
    q /= np.maximum(q.sum(1, keepdims=True), 1e-12)
    c /= np.maximum(c.sum(1, keepdims=True), 1e-12)
    index = faiss.IndexFlat(c.shape[1], faiss.METRIC_L1)
    index.add(c)
    _, rows = index.search(q, min(depth, len(ids)))
    return [[ids[r] for r in row if r >= 0] for row in rows]


def code_rankings(query_codes: np.ndarray, catalogue_codes: np.ndarray, ids: Sequence[str], depth: int) -> list[list[str]]:
    """Baseline: the whole catalogue by Hamming distance between whole-photo codes (ties by id)."""
    import faiss

    from search.index import hamming_topk

    codes = np.ascontiguousarray(catalogue_codes, np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return [[ids[r] for r in hamming_topk(index, ids, q, depth)[0]] for q in np.asarray(query_codes, np.uint8)]


def float_ranking(index, query_float: np.ndarray, query_colour: np.ndarray, category: str, attributes: Mapping[str, str],
                  catalogue_floats: Mapping[str, np.ndarray], depth: int) -> list[str]:
    """Baseline: the search index's own ranking of ``category`` with cosine distance of float features
    in place of the Hamming distance of the binary codes.

    The index scores every product of the category (colour distance, shared attributes); the
    appearance term ``w_appearance * hamming / bits`` is swapped for ``w_appearance * (1 - cos) / 2``,
    which spans the same [0, 1].
    """
    n = index.category_sizes().get(category, 0)
    if n == 0:
        return []
    w = index.ranking.w_appearance
    bits = index.code_bytes * 8
    q = np.asarray(query_float, np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    result = index.search(np.zeros(index.code_bytes, np.uint8), query_colour, category, attributes, k=n)
    scored = []
    for hit in result.hits:
        f = catalogue_floats[hit.id]
        cos = float(f @ q) / max(float(np.linalg.norm(f)), 1e-12)
        scored.append((round(hit.score - w * hit.hamming / bits + w * (1.0 - cos) / 2.0, 9), hit.id))
    scored.sort()
    return [pid for _, pid in scored[:depth]]


@dataclass
class CatalogueFeatures:
    ids: list[str]
    whole_codes: np.ndarray  # (n, code bytes) uint8
    whole_colours: np.ndarray  # (n, bins)
    roi_floats: dict[str, np.ndarray]  # id -> float features of the indexed ROI


def catalogue_features(records: Iterable[tuple[str, Path, tuple[int, int, int, int]]], featurizer: Featurizer, *,
                       progress: bool = True) -> CatalogueFeatures:
    """Whole-photo codes and colours and ROI float features of every (id, image path, roi) of the catalogue."""
    from indexer.images import load_image

    ids, wholes, crops = [], [], []
    rows = list(records)
    codes, colours, floats = [], [], []
    b = featurizer.batch
    for i in tqdm(range(0, len(rows), b), desc="catalogue baselines", unit="batch", disable=not progress):
        wholes = [load_image(path) for _, path, _ in rows[i : i + b]]
        crops = [im.crop(tuple(int(v) for v in roi)) for im, (_, _, roi) in zip(wholes, rows[i : i + b])]
        codes.append(featurizer.codes(wholes))
        colours.append(featurizer.colours(wholes))
        floats.append(featurizer.floats(crops))
        ids.extend(pid for pid, _, _ in rows[i : i + b])
    if not ids:
        raise ValueError("the catalogue is empty: nothing to evaluate")
    roi_floats = np.concatenate(floats).astype(np.float32)
    return CatalogueFeatures(ids, np.concatenate(codes), np.concatenate(colours), dict(zip(ids, roi_floats)))


def run_baselines(run: Run, images: QueryImages, described: Mapping[tuple[str, str], dict], catalogue: CatalogueFeatures,
                  featurizer: Featurizer, index, *, depth: int = 20, progress: bool = True) -> dict[str, float]:
    """The three baselines on the run's queries; returns the seconds each took."""
    seconds = {}
    t0 = time.perf_counter()
    keys = list(dict.fromkeys(q.image for q in run.queries))
    q_codes, q_colours = [], []
    b = featurizer.batch
    for i in tqdm(range(0, len(keys), b), desc="query baselines", unit="batch", disable=not progress):
        photos = [images.get(k) for k in keys[i : i + b]]
        q_codes.append(featurizer.codes(photos))
        q_colours.append(featurizer.colours(photos))
    row_of = {k: i for i, k in enumerate(keys)}
    q_codes, q_colours = np.concatenate(q_codes), np.concatenate(q_colours)
    by_colour = colour_rankings(q_colours, catalogue.whole_colours, catalogue.ids, depth)
    by_code = code_rankings(q_codes, catalogue.whole_codes, catalogue.ids, depth)
    for q in run.queries:
        run.put(COLOUR_ONLY, q.id, Ranking(ids=by_colour[row_of[q.image]]))
        run.put(WHOLE_CODE, q.id, Ranking(ids=by_code[row_of[q.image]]))
    seconds["whole-photo baselines"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    queries = {q.id: q for q in run.queries}
    todo = sorted(described.items(), key=lambda kv: queries[kv[0][1]].image)
    for i in tqdm(range(0, len(todo), b), desc="float baseline", unit="batch", disable=not progress):
        part = todo[i : i + b]
        crops = [images.get(queries[qid].image).crop(tuple(int(v) for v in d["roi"])) for (_, qid), d in part]
        feats, colours = featurizer.floats(crops), featurizer.colours(crops)
        for ((option, qid), d), f, c in zip(part, feats, colours):
            attrs = {a["group"]: a["value"] for a in d["attributes"]}
            ids = float_ranking(index, f, c, d["category"], attrs, catalogue.roi_floats, depth)
            run.put(f"float {option}", qid, Ranking(ids=ids, category=d["category"], roi=tuple(d["roi"]), fallback=d["fallback"]))
    seconds["float baseline"] = round(time.perf_counter() - t0, 2)
    return seconds


# -- shop queries -------------------------------------------------------------------------------
def shop_queries(products, category_of: Mapping[str, str], images: QueryImages, *, n: int, seed: int, compose=None,
                 progress: bool = True) -> list[Query]:
    """Composed-scene queries: ``n`` catalogue products (seeded draw), each transformed and pasted
    with 1-2 garments of other categories onto a background by ``indexer.scenes``'s composer.

    The query's target is the source product, its category the product's true one and its box
    the box the composer reports for the pasted target.
    """
    from indexer.images import load_image

    if compose is None:
        compose = default_composer()
    usable = [p for p in products if p.id in category_of]
    if not usable:
        raise ValueError("no catalogue product has a known category: no shop queries")
    rng = np.random.default_rng([seed, 8])
    chosen = rng.choice(len(usable), size=min(n, len(usable)), replace=False)
    if n > len(usable):
        logger.warning("--queries %d is more than the %d catalogue products: using each once", n, len(usable))
    queries = []
    for qi, i in enumerate(tqdm(sorted(chosen), desc="shop scenes", unit="scene", disable=not progress)):
        target = usable[i]
        others_pool = [j for j, p in enumerate(usable) if category_of[p.id] != category_of[target.id]]
        k = int(rng.integers(1, 3))
        others = [usable[j] for j in rng.choice(others_pool, size=min(k, len(others_pool)), replace=False)] if others_pool else []
        scene, boxes = compose(load_image(target.image), [load_image(o.image) for o in others], rng)
        key = f"shop:{qi:04d}"
        images.add_image(key, scene)
        category = category_of[target.id]
        box = tuple(float(v) for v in boxes[0])
        queries.append(Query(f"shop-{qi:04d}", SHOP, key, category, box, target.id, frozenset([category])))
    return queries


def default_composer():
    """``indexer.scenes``'s composer as ``compose(target, others, rng) -> (scene, boxes)``."""
    try:
        from indexer import scenes
    except ImportError:
        raise ValueError("the scene composer (indexer/scenes.py) is not installed: the shop query set cannot be "
                         "composed; run with --queries 0 for the street set alone") from None
    return scenes.compose_for_evaluation


# -- street queries -----------------------------------------------------------------------------
def street_queries(ccp_dir: str | Path, split: str | None, catalogue_categories: Collection[str], images: QueryImages, *,
                   schema: Schema | None = None, min_side: int = 24, min_pixels: int = 1000) -> list[Query]:
    """Street-to-shop queries from a ccp-layout folder: one per garment box, one per photo.

    A garment is a query when its label maps to a category the catalogue holds and its box is at
    least ``min_side`` pixels each way with ``min_pixels`` mask pixels (ccp boxes of a few stray
    pixels are no garment a shopper could mean). The photo query counts every mapped garment
    present as right, whatever its size.
    """
    from indexer.datasets import ccp_rows

    schema = schema or default_schema()
    catalogue_categories = set(catalogue_categories)
    queries = []
    for rec in ccp_rows(ccp_dir, split):
        key = f"ccp:{rec['image']}"
        present, garments = set(), []
        for b in rec.get("boxes", []):
            category = schema.dataset_category("ccp", b["label"])
            if not category or category not in catalogue_categories:
                continue
            present.add(category)
            x0, y0, x1, y1 = (float(v) for v in b["box"])
            if x1 - x0 >= min_side and y1 - y0 >= min_side and b.get("pixels", math.inf) >= min_pixels:
                garments.append((b["label"], category, (x0, y0, x1, y1)))
        if not present:
            continue
        images.add_path(key, rec["photo"])
        stem = Path(rec["image"]).stem
        queries.append(Query(f"street-{stem}", STREET_PHOTO, key, None, None, None, frozenset(present)))
        for label, category, box in garments:
            queries.append(Query(f"street-{stem}-{label}", STREET_GARMENT, key, category, box, None, frozenset([category])))
    return queries


# -- the report ---------------------------------------------------------------------------------
SYSTEM_ORDER = ("auto", "guided", "rectangle", "float auto", "float guided", "float rectangle", COLOUR_ONLY, WHOLE_CODE)
_SYSTEM_NOTES = {
    "auto": "option 1: the attribute model picks the garment",
    "guided": "option 2: the true category given",
    "rectangle": "option 3: the garment's box given",
    "float auto": "baseline: option 1 with float features, not binary codes",
    "float guided": "baseline: option 2 with float features",
    "float rectangle": "baseline: option 3 with float features",
    COLOUR_ONLY: "baseline: whole-photo colour histogram, whole catalogue",
    WHOLE_CODE: "baseline: whole-photo binary code, whole catalogue, no attributes or ROI",
}


def _ordered(systems: Iterable[str]) -> list[str]:
    systems = list(systems)
    return [s for s in SYSTEM_ORDER if s in systems] + sorted(s for s in systems if s not in SYSTEM_ORDER)


def result_tables(metrics: Mapping, *, k: int = 10) -> list:
    """The report's metric tables, from ``summarise``'s output."""
    from search.report import Table

    tables = []
    shop = metrics.get(SHOP)
    if shop:
        rows = []
        for s in _ordered(shop["systems"]):
            m = shop["systems"][s]
            rows.append([s, m["R@1"], m[f"R@{k}"], m[f"P@{k}"], m.get("category_right"), m.get("fallback_share"),
                         m["not_found"], m["queries"], _SYSTEM_NOTES.get(s, "")])
        tables.append(Table(
            f"Shop instance retrieval (composed scenes, {shop['queries']} queries)",
            ["system", "R@1", f"R@{k}", f"category P@{k}", "category right", "no garment found", "target not returned", "queries", "what"],
            rows,
            note="The target is the catalogue product whose photo was transformed and pasted into the scene. "
                 "'category right': share of queries searched in the true category; 'no garment found': share "
                 "where the detector found nothing and the whole photo was used.",
        ))
    garment, photo = metrics.get(STREET_GARMENT), metrics.get(STREET_PHOTO)
    if garment or photo:
        systems = _ordered({*(garment or {}).get("systems", {}), *(photo or {}).get("systems", {})})
        rows = []
        for s in systems:
            g = (garment or {}).get("systems", {}).get(s)
            p = (photo or {}).get("systems", {}).get(s)
            rows.append([s, g[f"P@{k}"] if g else None, p[f"P@{k}"] if p else None,
                         (g or {}).get("category_right"), g["queries"] if g else None, p["queries"] if p else None,
                         _SYSTEM_NOTES.get(s, "")])
        tables.append(Table(
            "Street-to-shop, category level (ccp photos)",
            ["system", f"garment P@{k}", f"photo P@{k}", "category right", "garment queries", "photo queries", "what"],
            rows,
            note=f"garment P@{k}: share of the top {k} in the garment's category (options 2 and 3, baselines on the whole "
                 f"photo); photo P@{k}: share of the top {k} whose category is one of the garments present (option 1 on "
                 "the whole photo). Missing results count as wrong.",
        ))
    return tables


def timing_tables(run: Run, stages: Mapping[str, float]) -> list:
    from search.report import Table

    rows = []
    for system, parts in timing_summary(run).items():
        for name, t in parts.items():
            rows.append([system, name, t["median"], t["p90"], t["n"]])
    per_query = Table("Timings per query (ms)", ["option", "stage", "median", "p90", "n"], rows,
                      note="From the engine's own timings of each search (describe's stages per image, the index search, total).")
    whole = Table("Run stages (s)", ["stage", "seconds"], [[name, round(float(s), 1)] for name, s in stages.items()],
                  note="Wall-clock seconds of each stage of this evaluation run.")
    return [per_query, whole]


def curve_plots(metrics: Mapping) -> list:
    from search.report import Plot, curve_plot

    plots = []
    for query_set, curve, ylabel, caption in (
        (SHOP, "recall_curve", "recall@k", "Shop scenes: recall of the source product at k"),
        (SHOP, "precision_curve", "category precision@k", "Shop scenes: category precision at k"),
        (STREET_GARMENT, "precision_curve", "category precision@k", "Street garments: category precision at k"),
        (STREET_PHOTO, "precision_curve", "category precision@k", "Street photos (option 1): precision at k"),
    ):
        block = metrics.get(query_set)
        if not block:
            continue
        curves = {s: block["systems"][s][curve] for s in _ordered(block["systems"]) if curve in block["systems"][s]}
        if curves:
            ks = list(range(1, len(next(iter(curves.values()))) + 1))
            plots.append(Plot(caption, curve_plot(curves, ks, ylabel=ylabel, title=caption)))
    return plots


def case_strips(run: Run, images: QueryImages, image_of: Mapping[str, Path], category_of: Mapping[str, str], *,
                k: int = 10, n: int = 4) -> dict[str, list]:
    """Worst and best queries of each set, each as a strip of the query and its top results."""
    from indexer.images import ImageError, load_image
    from search.report import Strip, Thumb, thumbnail_jpeg

    thumbs: dict[str, bytes | None] = {}

    def product_thumb(pid: str) -> bytes | None:
        if pid not in thumbs:
            try:
                thumbs[pid] = thumbnail_jpeg(load_image(image_of[pid]))
            except (KeyError, ImageError) as exc:
                logger.warning("no thumbnail for %s: %s", pid, exc)
                thumbs[pid] = None
        return thumbs[pid]

    sections = {}
    for query_set, system in ((SHOP, "rectangle"), (SHOP, "auto"), (STREET_GARMENT, "rectangle"), (STREET_PHOTO, "auto")):
        worst, best = cases(run, system, query_set, category_of, k=k, n=n)
        for label, chosen in (("worst", worst), ("best", best)):
            if not chosen:
                continue
            strips = []
            for q in chosen:
                r = run.rankings[system][q.id]
                shown_box = q.box if system == "rectangle" else r.roi
                scores = query_scores(q, r.ids, category_of, k)
                head = ", ".join(f"{m} {v:.2f}" for m, v in scores.items())
                query_thumb = Thumb(thumbnail_jpeg(images.get(q.image), box=shown_box),
                                    f"{q.id}: {q.category or '/'.join(sorted(q.accepted))} -> {r.category}")
                results = [Thumb(product_thumb(pid), f"{i}. {category_of.get(pid, '?')}",
                                 (pid == q.target) if q.target else category_of.get(pid) in q.accepted)
                           for i, pid in enumerate(r.ids[:k], 1)]
                if q.target and q.target not in r.ids[:k]:
                    results.append(Thumb(product_thumb(q.target), f"target (rank {target_rank(r.ids, q.target) or '>' + str(len(r.ids))})", None))
                strips.append(Strip(f"{q.id} ({head})", query_thumb, results))
            sections[f"{query_set}, {system}: {label} {len(strips)}"] = strips
    return sections


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
    """The catalogue dump: the clothing photos of ``split``, titled from their labels (``indexer.convert``)."""
    from indexer.convert import convert_clothing

    dump, counts = convert_clothing(clothing, out, split=split, progress=progress)
    logger.info("catalogue: %d products, %d photos left out (no usable label)", counts["products"], counts["left_out"])
    if not counts["products"]:
        raise ValueError(f"no products in the {split} split of {clothing}: nothing to index")
    return dump


def load_featurizer(describer, *, batch: int = 16) -> CoderFeaturizer:
    """The baselines' features from a loaded ``indexer.describe.Describer``'s coder and colour settings."""
    return CoderFeaturizer(describer.coder, describer.colour, batch=batch)


def build_catalogue_index(dump: Path, models: Path, index_dir: Path, *, describer=None, device: str = "cpu",
                          progress: bool = True) -> Path:
    """Index the catalogue dump with the bulk indexer (which resumes an interrupted run)."""
    from indexer.bulk import build_index

    summary = build_index(dump, models, index_dir, describer=describer, device=device, progress=progress)
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


def evaluate_retrieval(clothing: str | Path, ccp: str | Path, models: str | Path, out: str | Path, *,
                       config: RetrievalEvalConfig | None = None, progress: bool = True, describer=None,
                       compose=None) -> dict:
    """The whole evaluation (module docstring); returns what ``metrics.json`` holds.

    Args:
        describer: a ready ``indexer.describe.Describer`` used instead of loading the models (tests).
        compose: the scene composer (default: ``indexer.scenes``'s).
    """
    cfg = config or RetrievalEvalConfig()
    schema = default_schema()
    clothing, ccp, models, out = Path(clothing), Path(ccp), Path(models), Path(out)
    for what, path in (("clothing", clothing / "images.csv"), ("ccp", ccp / "annotations.jsonl")):
        if not path.is_file():
            raise FileNotFoundError(f"--{what} {path.parent} does not have the {what} layout: no {path.name}")
    if not models.is_dir():
        raise FileNotFoundError(f"no models directory at {models}")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _evaluate(clothing, ccp, models, out, cfg, schema, progress, describer, compose)
    finally:
        torch.set_num_threads(threads)


def _evaluate(clothing: Path, ccp: Path, models: Path, out: Path, cfg: RetrievalEvalConfig, schema: Schema,
              progress: bool, describer, compose) -> dict:
    from indexer.dump import read_dump
    from search.report import Report, write_report

    stages: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    dump = convert_catalogue(clothing, out / "catalogue", cfg.split, progress=progress)
    products = list(read_dump(dump, schema=schema, check_images=False))
    category_of = _truth_categories(products, schema)
    image_of = {p.id: p.image for p in products}
    stages["catalogue dump"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index_dir = build_catalogue_index(dump, models, out / "index", describer=describer, device=cfg.device, progress=progress)
    stages["catalogue index"] = time.perf_counter() - t0

    engine = open_engine(index_dir, describer=describer, device=cfg.device)
    try:
        t0 = time.perf_counter()
        images = QueryImages()
        shop = (shop_queries(products, category_of, images, n=cfg.queries, seed=cfg.seed, compose=compose, progress=progress)
                if cfg.queries else [])
        street = street_queries(ccp, cfg.split, set(category_of.values()), images, schema=schema,
                                min_side=cfg.min_street_side, min_pixels=cfg.min_street_pixels)
        run = Run(shop + street)
        stages["query sets"] = time.perf_counter() - t0
        logger.info("%d shop queries, %d street garments, %d street photos", len(shop),
                    sum(q.set == STREET_GARMENT for q in street), sum(q.set == STREET_PHOTO for q in street))

        t0 = time.perf_counter()
        described = run_engine(engine, run, images, depth=cfg.depth, progress=progress)
        stages["engine queries"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        featurizer = load_featurizer(engine.describer, batch=cfg.batch)
        records = [(r.id, image_of[r.id], r.description.roi) for r in engine.store.iter_records() if r.id in image_of]
        catalogue = catalogue_features(records, featurizer, progress=progress)
        stages["catalogue baseline features"] = time.perf_counter() - t0
        stages.update(run_baselines(run, images, described, catalogue, featurizer, engine.index, depth=cfg.depth, progress=progress))
    finally:
        engine.store.close()

    metrics = summarise(run, category_of, k=cfg.k, depth=cfg.depth)
    stages["total"] = time.perf_counter() - t_start
    result = {
        "config": asdict(cfg),
        "inputs": {"clothing": str(clothing), "ccp": str(ccp), "models": str(models)},
        "catalogue": {"products": len(products), "indexed": len(engine.index),
                      "categories": dict(sorted(Counter(category_of.values()).items()))},
        "queries": {s: sum(q.set == s for q in run.queries) for s in (SHOP, STREET_GARMENT, STREET_PHOTO)},
        "metrics": metrics,
        "timings_ms": timing_summary(run),
        "stages_s": {name: round(s, 2) for name, s in stages.items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "device": cfg.device},
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
    result = evaluate_retrieval(args.clothing, args.ccp, args.models, args.out, config=cfg)
    for table in result_tables(result["metrics"], k=cfg.k):
        print(f"\n{table.title}")
        print("  ".join(f"{c:>14}" for c in table.columns[:-1]))
        for row in table.rows:
            print("  ".join(f"{v:>14.3f}" if isinstance(v, float) else f"{'-' if v is None else v:>14}" for v in row[:-1]))
    print(f"\nrun time {result['stages_s']['total']:.0f} s; report: {Path(args.out) / 'index.html'}")
    return 0
