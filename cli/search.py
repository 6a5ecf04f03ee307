"""Subcommands contributed by ``search``: ``query``."""

from __future__ import annotations

import json
from pathlib import Path


def _garment_table(q: dict, results: list[dict], offset: int) -> list[str]:
    lines = ["attributes: " + ", ".join(f"{a['group']}={a['value']} ({a['p']:.2f})" for a in q["attributes"])]
    if q.get("filters"):
        lines.append("narrowed by: " + ", ".join(q["filters"]))
    if q.get("note"):
        lines.append(f"note: {q['note']}")
    lines.append(f"{'#':>3}  {'id':<20} {'score':>7} {'hamming':>7} {'colour':>6}  title / shared attributes")
    for i, r in enumerate(results, offset + 1):
        shared = ", ".join(a.split("=", 1)[1] for a in r["shared_attributes"])
        rid = r["id"] + (f" #{r['photo']}" if r.get("photo") else "")  # which of its photos matched
        lines.append(
            f"{i:>3}  {rid:<20} {r['score']:>7.3f} {r['hamming']:>7d} {r['colour_distance']:>6.3f}  {r['title']}"
            + (f"  [{shared}]" if shared else "")
        )
    if not results:
        lines.append("  (no results)")
    if q.get("more"):
        lines.append(f"  more: --offset {offset + len(results)}")
    return lines


def _table(response: dict) -> str:
    q = response["query"]
    offset = q.get("offset", 0)
    head = f"option {q['option']}: category {q['category']}" + (
        " (no garment found: whole image)" if q["fallback"] else ""
    )
    garments = response.get("garments") or []
    if len(garments) <= 1:
        lines = [head + f", roi {q['roi']}, {q['timings_ms']['total']:.0f} ms"]
        return "\n".join(lines + _garment_table(q, response["results"], offset))
    lines = [f"option {q['option']}: {len(garments)} garments found, {q['timings_ms']['total']:.0f} ms"]
    for g in garments:
        answered = g["garment"] == q.get("garment", 0)
        lines.append("")
        lines.append(f"garment {g['garment']}: {g['category']}, roi {g['roi']}" + (" (answered)" if answered else ""))
        lines += _garment_table({**g, "filters": q["filters"] if answered else g["filters"]}, g["results"], 0)
    return "\n".join(lines)


def _jsonl(response: dict) -> str:
    """One JSON object per result, garment by garment, in rank order, each with its ``rank`` (1 =
    best, counting the offset) and its ``garment`` (number and category)."""
    q = response["query"]
    garments = response.get("garments") or [{"garment": 0, "category": q["category"], "results": response["results"]}]
    rows = []
    for g in garments:
        first = (q.get("offset", 0) if g["garment"] == q.get("garment", 0) else 0) + 1
        for i, r in enumerate(g["results"], first):
            rows.append(
                json.dumps(
                    {"rank": i, "garment": g["garment"], "garment_category": g["category"], **r}, ensure_ascii=False
                )
            )
    return "\n".join(rows)


def _query(args) -> int:
    from cli.scaling import engine_opener
    from foundation.schema import default_schema
    from search.engine import SearchEngine
    from search.narrowing import parse_filters
    from search.query import Query

    option = "rectangle" if args.box else "guided" if args.category else "auto"
    # every flag is checked before the models load
    query = Query.search(
        Path(args.image),
        option,
        category=args.category,
        box=args.box,
        k=args.k,
        filters=parse_filters(args.filter, default_schema()),
        offset=args.offset,
        price_min=args.price_min,
        price_max=args.price_max,
    )
    open_engine = engine_opener(args, writable=True)
    with (
        open_engine() if open_engine else SearchEngine.open(args.index, device=args.device, runtime=args.runtime)
    ) as engine:
        response = engine.search(query).to_json()
    if args.jsonl:
        rows = _jsonl(response)
        if rows:
            print(rows)
    else:
        print(json.dumps(response, indent=1) if args.json else _table(response))
    return 0


def register(commands) -> None:
    from cli.scaling import add_backend_args, add_runtime_arg

    p = commands.top.add_parser("query", help="search an index with a photo")
    p.add_argument("index", help="index directory written by `fashion-search index`")
    p.add_argument("image", help="the query photo")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--category", help="guided: the fashion category meant (e.g. pants)")
    which.add_argument("--box", help="rectangle: x0,y0,x1,y1 in the photo's pixels")
    p.add_argument("--k", type=int, default=10, help="results to return (default 10)")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="GROUP=VALUE",
        help="only products with this attribute (e.g. colour=red; repeat for more groups); it also replaces "
        "the photo's own value in the ranking",
    )
    p.add_argument("--price-min", type=float, help="only products priced at least this (unknown prices left out)")
    p.add_argument("--price-max", type=float, help="only products priced at most this (unknown prices left out)")
    p.add_argument("--offset", type=int, default=0, help="skip this many results: the next page (default 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the whole answer as JSON instead of a table")
    out.add_argument("--jsonl", action="store_true", help="print one JSON object per result (JSON Lines)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_runtime_arg(p)
    add_backend_args(p)
    p.set_defaults(func=_query)

    def _retrieval(args) -> int:
        from evaluation.retrieval import retrieval_command

        return retrieval_command(args)

    p = commands.evaluate.add_parser(
        "retrieval",
        help="measure the whole search on real photos, beside baselines; writes metrics.json and an HTML report",
    )
    p.add_argument(
        "--clothing", required=True, help="a folder in the layout of the clothing dataset (images.csv, images/)"
    )
    p.add_argument(
        "--ccp", required=True, help="a folder in the layout of the ccp dataset (annotations.jsonl, photos/)"
    )
    p.add_argument("--models", required=True, help="models directory (attributes.pt, detector.pt, appearance.pt)")
    p.add_argument("--out", required=True, help="report folder: metrics.json, index.html and the catalogue index")
    p.add_argument("--seed", type=int, default=0, help="seed of the query scenes (default 0)")
    p.add_argument("--split", default="val", choices=("train", "val"), help="split indexed and queried (default val)")
    p.add_argument(
        "--queries", type=int, default=300, help="composed shop scenes (default 300; 0: the street set alone)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=_retrieval)
