"""Simpler systems a shop could use instead, run on the same queries: colour only, whole-image code, float features."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from evaluation.metrics import COLOUR_ONLY, WHOLE_CODE, QueryImages, Ranking, Run
from search.narrowing import Narrowing
from search.ranking import Probe, RankingConfig
from search.tiers import search_category


# -- baselines ----------------------------------------------------------------------------------
class Featurizer(Protocol):
    """What the baselines compute from images: binary codes, float features and colour histograms."""

    batch: int

    def floats(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, d) float32, before binarizing

    def codes(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, code bytes) uint8, packed bits

    def colours(self, images: Sequence[Image.Image]) -> np.ndarray: ...  # (n, bins) histograms


def colour_rankings(
    query_colours: np.ndarray, catalogue_colours: np.ndarray, ids: Sequence[str], depth: int
) -> list[list[str]]:
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


def code_rankings(
    query_codes: np.ndarray, catalogue_codes: np.ndarray, ids: Sequence[str], depth: int
) -> list[list[str]]:
    """Baseline: the whole catalogue by Hamming distance between whole-photo codes (ties by id)."""
    import faiss

    from search.index import hamming_topk

    codes = np.ascontiguousarray(catalogue_codes, np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return [[ids[r] for r in hamming_topk(index, ids, q, depth)[0]] for q in np.asarray(query_codes, np.uint8)]


def float_ranking(
    searcher: Searcher, query_float: np.ndarray, query_colour: np.ndarray, described: dict, catalogue_floats, depth: int
) -> list[str]:
    """Baseline: the search index's own ranking of the described category with cosine distance of
    float features in place of the Hamming distance of the binary codes.

    The index scores every product of the category (colour distance, shared attributes); the
    appearance term ``w_appearance * hamming / bits`` is swapped for ``w_appearance * (1 - cos) / 2``,
    which spans the same [0, 1]. ``described``: an answer's ``query`` (its category and attributes).
    """
    index, ranking, category = searcher.index, searcher.ranking, described["category"]
    n = index.category_sizes().get(category, 0)
    if n == 0:
        return []
    w = ranking.w_appearance
    bits = index.code_bytes * 8
    q = np.asarray(query_float, np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    attributes = {a["group"]: a["value"] for a in described["attributes"]}
    probe = Probe.of(np.zeros(index.code_bytes, np.uint8), query_colour, attributes, index.columns)
    result = search_category(index, probe, category, Narrowing(), ranking, n)
    scored = []
    for hit in result.hits:
        f = catalogue_floats[hit.id]
        cos = float(f @ q) / max(float(np.linalg.norm(f)), 1e-12)
        scored.append((round(hit.score - w * hit.hamming / bits + w * (1.0 - cos) / 2.0, 9), hit.id))
    scored.sort()
    return [pid for _, pid in scored[:depth]]


@dataclass(frozen=True)
class Searcher:
    """The engine's index and ranking, which the float baseline ranks with, and the results kept a query."""

    index: object  # search.protocol.SearchIndex
    ranking: RankingConfig
    depth: int = 20


@dataclass
class CatalogueFeatures:
    ids: list[str]
    whole_codes: np.ndarray  # (n, code bytes) uint8
    whole_colours: np.ndarray  # (n, bins)
    roi_floats: dict[str, np.ndarray]  # id -> float features of the indexed ROI
    featurizer: Featurizer  # what made them, and makes the queries'


def catalogue_features(
    records: Iterable[tuple[str, Path, tuple[int, int, int, int]]], featurizer: Featurizer, *, progress: bool = True
) -> CatalogueFeatures:
    """Whole-photo codes and colours and ROI float features of every (id, image path, roi) of the catalogue."""
    from foundation.images import load_image

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
    return CatalogueFeatures(
        ids, np.concatenate(codes), np.concatenate(colours), dict(zip(ids, roi_floats)), featurizer
    )


def run_baselines(
    run: Run,
    images: QueryImages,
    described: Mapping[tuple[str, str], dict],
    catalogue: CatalogueFeatures,
    searcher: Searcher,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """The three baselines on the run's queries; returns the seconds each took."""
    featurizer, depth = catalogue.featurizer, searcher.depth
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
            ids = float_ranking(searcher, f, c, d, catalogue.roi_floats, depth)
            run.put(
                f"float {option}",
                qid,
                Ranking(ids=ids, category=d["category"], roi=tuple(d["roi"]), fallback=d["fallback"]),
            )
    seconds["float baseline"] = round(time.perf_counter() - t0, 2)
    return seconds
