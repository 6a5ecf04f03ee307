"""The report's tables, curves and example strips, made from a finished run."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from evaluation.metrics import (
    AUTO_GARMENTS,
    COLOUR_ONLY,
    SHOP,
    STREET_GARMENT,
    STREET_PHOTO,
    WHOLE_CODE,
    QueryImages,
    Run,
    cases,
    query_scores,
    target_rank,
    timing_summary,
)

logger = logging.getLogger(__name__)

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
    systems = [s for s in systems if s != AUTO_GARMENTS]  # scored otherwise: its own table
    return [s for s in SYSTEM_ORDER if s in systems] + sorted(s for s in systems if s not in SYSTEM_ORDER)


def result_tables(metrics: Mapping, *, k: int = 10) -> list:
    """The report's metric tables, from ``summarise``'s output."""
    from evaluation.report import Table

    tables = []
    shop = metrics.get(SHOP)
    if shop:
        rows = []
        for s in _ordered(shop["systems"]):
            m = shop["systems"][s]
            rows.append(
                [
                    s,
                    m["R@1"],
                    m[f"R@{k}"],
                    m[f"P@{k}"],
                    m.get("category_right"),
                    m.get("fallback_share"),
                    m["not_found"],
                    m["queries"],
                    _SYSTEM_NOTES.get(s, ""),
                ]
            )
        tables.append(
            Table(
                f"Shop instance retrieval (composed scenes, {shop['queries']} queries)",
                [
                    "system",
                    "R@1",
                    f"R@{k}",
                    f"category P@{k}",
                    "category right",
                    "no garment found",
                    "target not returned",
                    "queries",
                    "what",
                ],
                rows,
                note="The target is the catalogue product whose photo was transformed and pasted into the scene. "
                "'category right': share of queries searched in the true category; 'no garment found': share "
                "where the detector found nothing and the whole photo was used.",
            )
        )
    garment, photo = metrics.get(STREET_GARMENT), metrics.get(STREET_PHOTO)
    if garment or photo:
        systems = _ordered({*(garment or {}).get("systems", {}), *(photo or {}).get("systems", {})})
        rows = []
        for s in systems:
            g = (garment or {}).get("systems", {}).get(s)
            p = (photo or {}).get("systems", {}).get(s)
            rows.append(
                [
                    s,
                    g[f"P@{k}"] if g else None,
                    p[f"P@{k}"] if p else None,
                    (g or {}).get("category_right"),
                    g["queries"] if g else None,
                    p["queries"] if p else None,
                    _SYSTEM_NOTES.get(s, ""),
                ]
            )
        tables.append(
            Table(
                "Street-to-shop, category level (ccp photos)",
                [
                    "system",
                    f"garment P@{k}",
                    f"photo P@{k}",
                    "category right",
                    "garment queries",
                    "photo queries",
                    "what",
                ],
                rows,
                note=f"garment P@{k}: share of the top {k} in the garment's category (options 2 and 3, baselines on the whole "
                f"photo); photo P@{k}: share of the top {k} whose category is one of the garments present (option 1 on "
                "the whole photo). Missing results count as wrong.",
            )
        )
    looks = [(name, (metrics.get(name) or {}).get("systems", {}).get(AUTO_GARMENTS)) for name in (SHOP, STREET_PHOTO)]
    if any(row for _n, row in looks):
        shop, street = looks[0][1] or {}, looks[1][1] or {}
        tables.append(
            Table(
                "Shop the look: auto's every garment (DeepFashion2's protocol)",
                ["set", "offered", "R@1", f"R@{k}", f"first R@{k}", f"category P@{k}", "true garments", "photos"],
                [
                    [
                        "shop scenes",
                        shop.get("offered"),
                        shop.get("R@1"),
                        shop.get(f"R@{k}"),
                        shop.get(f"first R@{k}"),
                        None,
                        shop.get("queries"),
                        shop.get("queries"),
                    ],
                    [
                        "street photos",
                        street.get("offered"),
                        None,
                        None,
                        None,
                        street.get(f"P@{k}"),
                        street.get("garments"),
                        street.get("queries"),
                    ],
                ],
                note=f"A true garment is offered when a garment auto found overlaps its box at IoU >= 0.5; it is then "
                f"judged by that garment's own results (shop: the target product among them; street: the share of "
                f"the top {k} in its category). A garment not offered counts as a miss in R@1 and R@{k}. 'first "
                f"R@{k}': the first garment's results alone, what a shopper who taps nothing sees"
                + (
                    f" ({shop.get(f'first R@{k}, largest first')} had the largest garment come first; the first was "
                    f"the target for {shop.get('first is the target')} of the targets offered, "
                    f"{shop.get('first is the target by chance')} by chance)."
                    if shop
                    else "."
                ),
            )
        )
    return tables


def timing_tables(run: Run, stages: Mapping[str, float]) -> list:
    from evaluation.report import Table

    rows = []
    for system, parts in timing_summary(run).items():
        for name, t in parts.items():
            rows.append([system, name, t["median"], t["p90"], t["n"]])
    per_query = Table(
        "Timings per query (ms)",
        ["option", "stage", "median", "p90", "n"],
        rows,
        note="From the engine's own timings of each search (the whole photo's stages, the index search, total).",
    )
    whole = Table(
        "Run stages (s)",
        ["stage", "seconds"],
        [[name, round(float(s), 1)] for name, s in stages.items()],
        note="Wall-clock seconds of each stage of this evaluation run.",
    )
    return [per_query, whole]


def curve_plots(metrics: Mapping) -> list:
    from evaluation.report import Plot, curve_plot

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


def case_strips(
    run: Run,
    images: QueryImages,
    image_of: Mapping[str, Path],
    category_of: Mapping[str, str],
    *,
    k: int = 10,
    n: int = 4,
) -> dict[str, list]:
    """Worst and best queries of each set, each as a strip of the query and its top results."""
    from evaluation.report import Strip, Thumb, thumbnail_jpeg
    from foundation.images import ImageError, load_image

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
    for query_set, system in (
        (SHOP, "rectangle"),
        (SHOP, "auto"),
        (STREET_GARMENT, "rectangle"),
        (STREET_PHOTO, "auto"),
    ):
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
                query_thumb = Thumb(
                    thumbnail_jpeg(images.get(q.image), box=shown_box),
                    f"{q.id}: {q.category or '/'.join(sorted(q.accepted))} -> {r.category}",
                )
                results = [
                    Thumb(
                        product_thumb(pid),
                        f"{i}. {category_of.get(pid, '?')}",
                        (pid == q.target) if q.target else category_of.get(pid) in q.accepted,
                    )
                    for i, pid in enumerate(r.ids[:k], 1)
                ]
                if q.target and q.target not in r.ids[:k]:
                    results.append(
                        Thumb(
                            product_thumb(q.target),
                            f"target (rank {target_rank(r.ids, q.target) or '>' + str(len(r.ids))})",
                            None,
                        )
                    )
                strips.append(Strip(f"{q.id} ({head})", query_thumb, results))
            sections[f"{query_set}, {system}: {label} {len(strips)}"] = strips
    return sections
