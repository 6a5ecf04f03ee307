"""What the demo shows, measured: its detector and its search on held-out synthetic scenes.

    .venv/bin/python benchmarks/demo_quality.py [--home .fashion-search/demo] [--n 200] [--seed 99]

Needs a built demo (`make demo` once). Draws ``n`` new synthetic products (a seed the demo's
catalogue never used), then prints, side by side:

- the demo detector's Table 3 on them (guided vs non-guided mAP, guided box recall@0.5, fallback);
- per query option (guided with the true category, auto, rectangle = the true box), P@10 of the
  same colour and of the same category as the query's garment, the share of queries whose ROI
  overlaps the garment at IoU >= 0.5, and median query time, beside chance (the share of the
  catalogue's products of the garment's category that share its colour).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", default=str(ROOT / ".fashion-search" / "demo"))
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    home = Path(args.home)
    if not (home / "index" / "DONE").is_file():
        print(f"no built demo under {home}: run `make demo` (or `fashion-search demo --home {home}`) first")
        return 2

    from catalogues.synth import synthesize
    from detector.evaluate import evaluate_detector, format_report
    from search.engine import SearchEngine
    from search.query import Query

    def read_dump(path):
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

    catalogue = {r["id"]: r for r in read_dump(home / "catalogue" / "products.jsonl")}
    colours = Counter((r["attributes"]["category"], r["attributes"]["colour"]) for r in catalogue.values())
    per_category = Counter(r["attributes"]["category"] for r in catalogue.values())
    with tempfile.TemporaryDirectory() as tmp:
        dump = synthesize(Path(tmp) / "heldout", args.n, args.seed, progress=False)
        table3 = evaluate_detector(dump, home / "index" / "models", progress=False)
        print(format_report(table3))
        engine = SearchEngine.open(home / "index", writable=False)
        rows = {option: Counter() for option in ("guided", "auto", "rectangle")}
        times = {option: [] for option in rows}
        chance = []
        for q in read_dump(dump):
            attrs = q["attributes"]
            cat, colour = attrs["category"], attrs["colour"]
            box = next(b[:4] for b in q["boxes"] if b[4] == cat)
            chance.append(colours[(cat, colour)] / max(1, per_category[cat]))
            photo = (Path(dump).parent / q["image"]).read_bytes()
            for option, kw in (("guided", {"category": cat}), ("auto", {}), ("rectangle", {"box": box})):
                r = engine.search(Query.search(photo, option, k=10, **kw)).to_json()
                hits = [catalogue[h["id"]]["attributes"] for h in r["results"]]
                row = rows[option]
                row["queries"] += 1
                row["same colour"] += sum(h["colour"] == colour for h in hits) / 10
                row["same category"] += sum(h["category"] == cat for h in hits) / 10
                row["roi on the garment"] += _iou(r["query"]["roi"], box) >= 0.5
                times[option].append(r["query"]["timings_ms"]["total"])
        engine.close()
    figures = {
        option: {
            "P@10 same colour": round(row["same colour"] / row["queries"], 3),
            "P@10 same category": round(row["same category"] / row["queries"], 3),
            "ROI on the garment": round(row["roi on the garment"] / row["queries"], 3),
            "p50 ms": round(statistics.median(times[option]), 1),
        }
        for option, row in rows.items()
    }
    print(f"\nSearch on {args.n} held-out synthetic products (demo index of {len(catalogue)})")
    print(f"{'option':<10} {'P@10 same colour':>17} {'P@10 same category':>19} {'ROI on garment':>15} {'p50 ms':>7}")
    for option, f in figures.items():
        print(
            f"{option:<10} {f['P@10 same colour']:>17.3f} {f['P@10 same category']:>19.3f} "
            f"{f['ROI on the garment']:>15.3f} {f['p50 ms']:>7.1f}"
        )
    print(f"{'chance':<10} {statistics.mean(chance):>17.3f}   (same colour among the garment's category)")
    if args.json:
        Path(args.json).write_text(json.dumps({"detector": table3, "search": figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
