"""Recall and precision of rankings, and the record of what each system returned for each query."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.retrieval import retrieval_precision, retrieval_recall

logger = logging.getLogger(__name__)

SHOP, STREET_GARMENT, STREET_PHOTO = "shop", "street-garment", "street-photo"
OPTIONS = ("auto", "guided", "rectangle")
COLOUR_ONLY, WHOLE_CODE = "colour only", "whole-image code"
AUTO_GARMENTS = "auto garments"  # auto's every garment, scored in DeepFashion2's protocol
MATCH_IOU = 0.5  # a garment offered is the true one when their boxes overlap this much


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


@dataclass(frozen=True)
class GarmentGroup:
    """One garment an answer offered: its box, the category it was read as, its results."""

    roi: tuple[float, float, float, float]
    category: str
    ids: list[str]


@dataclass
class Ranking:
    """What one system returned for one query."""

    ids: list[str]
    category: str | None = None  # the category the system searched in (None: no restriction)
    roi: tuple[float, float, float, float] | None = None
    fallback: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    garments: list[GarmentGroup] = field(default_factory=list)  # auto: every garment offered, first meant first


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
            row["precision_curve"] = [
                round(float(np.mean([precision_at_k(lab, q.accepted, kk) for lab, q in zip(labels, answered)])), 4)
                for kk in ks
            ]
            if query_set == SHOP:
                row["recall_curve"] = [
                    round(float(np.mean([recall_at_k(got[q.id].ids, q.target, kk) for q in answered])), 4) for kk in ks
                ]
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
    for query_set, row in garment_summary(run, category_of, k=k).items():
        out[query_set]["systems"][AUTO_GARMENTS] = row
    return out


def matched_group(groups: Sequence[GarmentGroup], box) -> int | None:
    """The offered garment that is the true one at ``box``: the best overlap at IoU >= ``MATCH_IOU``."""
    if not groups or box is None:
        return None
    from torchvision.ops import box_iou

    iou = box_iou(torch.tensor([g.roi for g in groups], dtype=torch.float32), torch.tensor([box], dtype=torch.float32))
    best = int(iou[:, 0].argmax())
    return best if float(iou[best, 0]) >= MATCH_IOU else None


def garment_summary(run: Run, category_of: Mapping[str, str], *, k: int = 10) -> dict[str, dict]:
    """Auto's every garment scored as DeepFashion2's retrieval protocol scores a consumer photo: each
    true garment counts when an offered garment matches its box (IoU >= ``MATCH_IOU``), and is
    judged by that garment's own results; a garment not offered is a miss.

    shop scenes: ``offered`` (share of targets offered as a garment), ``R@1`` and ``R@k`` of the
    target's group (misses count 0), and ``first R@k`` (the first group alone: what a shopper who
    taps nothing sees). Street photos: per true garment of a catalogue category (the street garment
    queries), ``offered`` and the offered groups' category ``P@k``.
    """
    auto = run.rankings.get("auto", {})
    out: dict[str, dict] = {}
    shop = [q for q in run.queries if q.set == SHOP and q.id in auto]
    if shop:
        offered, r1, rk, first, largest, first_is, chance = [], [], [], [], [], [], []
        for q in shop:
            groups = auto[q.id].garments
            g = matched_group(groups, q.box)
            ids = groups[g].ids if g is not None else []
            offered.append(g is not None)
            r1.append(recall_at_k(ids, q.target, 1) if ids else 0.0)
            rk.append(recall_at_k(ids, q.target, k) if ids else 0.0)
            first.append(recall_at_k(groups[0].ids, q.target, k) if groups and groups[0].ids else 0.0)
            big = max(groups, key=lambda x: (x.roi[2] - x.roi[0]) * (x.roi[3] - x.roi[1]), default=None)
            largest.append(recall_at_k(big.ids, q.target, k) if big is not None and big.ids else 0.0)
            if g is not None:  # does the order beat picking an offered garment at random?
                first_is.append(g == 0)
                chance.append(1 / len(groups))
        out[SHOP] = {
            "offered": round(float(np.mean(offered)), 4),
            "R@1": round(float(np.mean(r1)), 4),
            f"R@{k}": round(float(np.mean(rk)), 4),
            f"first R@{k}": round(float(np.mean(first)), 4),
            f"first R@{k}, largest first": round(float(np.mean(largest)), 4),
            "first is the target": round(float(np.mean(first_is)), 4) if first_is else 0.0,
            "first is the target by chance": round(float(np.mean(chance)), 4) if chance else 0.0,
            "garments offered": round(float(np.mean([len(auto[q.id].garments) for q in shop])), 2),
            "queries": len(shop),
        }
    photo_of = {q.image: q.id for q in run.queries if q.set == STREET_PHOTO and q.id in auto}
    truths = [q for q in run.queries if q.set == STREET_GARMENT and q.image in photo_of]
    if truths:
        offered, precisions = [], []
        for q in truths:
            groups = auto[photo_of[q.image]].garments
            g = matched_group(groups, q.box)
            offered.append(g is not None)
            if g is not None:
                labels = [category_of.get(pid, "") for pid in groups[g].ids]
                precisions.append(precision_at_k(labels, q.accepted, k))
        out[STREET_PHOTO] = {
            "offered": round(float(np.mean(offered)), 4),
            f"P@{k}": round(float(np.mean(precisions)), 4) if precisions else 0.0,
            "garments": len(truths),
            "queries": len(photo_of),
        }
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
            out[system] = {
                name: {
                    "median": round(float(np.median(v)), 2),
                    "p90": round(float(np.percentile(v, 90)), 2),
                    "n": len(v),
                }
                for name, v in stages.items()
            }
    return out


def cases(
    run: Run, system: str, query_set: str, category_of: Mapping[str, str], *, k: int, n: int
) -> tuple[list[Query], list[Query]]:
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
        from foundation.images import load_image

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
