"""Where a query's time goes: each option (auto, guided, rectangle) stage by stage, beside a baseline.

The photos are the retrieval evaluation's composed shop scenes (``evaluation.queries.shop_queries``,
seeded) of the indexed dump's products, sent as JPEG bytes as a shopper uploads them; guided names
the target's category and rectangle draws the target's box, so the three options are timed on the
same photos. Each code is measured in a fresh process of its own, with its own packages first on
the path (``--baseline-src``: a checkout of another commit, e.g. ``mkdir /tmp/base && git archive
HEAD~1 | tar -x -C /tmp/base``), the same torch threads and a warm-up first; the two take turns (``--rounds``) on shares of the
photos, so a busy spell of the machine slows both. Stages are the
engine's own ``Answer.timings_ms``; ``other`` is the total less every stage (what none times),
``describe`` and ``total`` the engine's envelopes, ``wall`` this script's clock around
``Query.search`` and ``SearchEngine.search``. The share is of the summed totals. The quality row,
per option, is the shop recall@k: the share of scenes whose source product is among the ``--k``
results of the garment the answer gives first. A stage a
baseline times only in part (before this benchmark, guided's detector pass went untimed) shows a
large ratio beside a baseline ``other`` as large: compare the totals. ``--runtime onnx`` runs this
code's models on ONNX Runtime (the baseline's on torch, unless ``--baseline-runtime onnx``): with
``--baseline-src`` this very checkout, the two runtimes side by side (the graphs exported first: ``fashion-search export onnx
--models INDEX/models``).

    python benchmarks/query_cost.py --index INDEX --dump DUMP [--queries 60] [--threads 1] [--rounds 3]
        [--baseline-src DIR] [--runtime torch|onnx] [--baseline-runtime torch|onnx] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("auto", "guided", "rectangle")
# a query's time cut into stages; a code that does not time one leaves it in ``other``
STAGES = ("prepare", "detector", "attributes", "appearance", "colour", "same_photo", "search", "answer")
ROWS = (*STAGES, "other", "describe", "total", "wall")


def compose_queries(dump: Path, n: int, seed: int, out_dir: Path) -> list[dict]:
    """The evaluation's shop scenes of ``dump``'s products, written as JPEG files (this code's composer)."""
    sys.path.insert(0, str(ROOT))
    from evaluation.metrics import QueryImages
    from evaluation.queries import shop_queries
    from evaluation.retrieval import RetrievalEvalConfig, _truth_categories  # the evaluation's own truth
    from foundation.dump import read_dump
    from foundation.schema import default_schema

    schema = default_schema()
    products = list(read_dump(dump, schema=schema, check_images=False))
    images = QueryImages()
    config = RetrievalEvalConfig(queries=n, seed=seed)
    queries = shop_queries(products, _truth_categories(products, schema), images, config, progress=False)
    out = []
    for q in queries:
        path = out_dir / f"{q.id}.jpg"
        images.get(q.image).save(path, "JPEG", quality=90)
        out.append({"id": q.id, "photo": str(path), "category": q.category, "box": list(q.box), "target": q.target})
    return out


def measure(spec: dict) -> dict:
    """Runs in a process of its own, ``spec["src"]``'s packages first on the path: each query of each
    option searched once after the warm-up, with the engine's timings and the wall clock (ms)."""
    src = str(Path(spec["src"]).resolve())
    sys.path.insert(0, src)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(spec["threads"])
    import search.engine
    from search.engine import SearchEngine
    from search.query import Query

    if not Path(search.engine.__file__).resolve().is_relative_to(src):
        raise RuntimeError(f"imported {search.engine.__file__}, not the code of {src}")
    queries = spec["queries"]
    photos = [Path(q["photo"]).read_bytes() for q in queries]

    def one(i: int, option: str) -> dict:
        q = queries[i]
        t0 = time.perf_counter()
        query = Query.search(
            photos[i],
            option,
            category=q["category"] if option == "guided" else None,
            box=q["box"] if option == "rectangle" else None,
            k=spec["k"],
        )
        answer = engine.search(query)
        ms = {k: float(v) for k, v in answer.timings_ms.items()}
        ms["wall"] = (time.perf_counter() - t0) * 1e3
        hit = q.get("target") in {r.id for r in answer.results}
        return {"id": q["id"], "garments": len(answer.garments), "ms": ms, "hit": hit}

    runs: dict[str, list[dict]] = {o: [] for o in OPTIONS}
    # a baseline from before the runtime choice takes no runtime argument
    runtime = {"runtime": spec["runtime"]} if spec.get("runtime", "torch") != "torch" else {}
    with SearchEngine.open(spec["index"], writable=False, **runtime) as engine:
        for i in range(min(spec["warmup"], len(queries))):
            for option in OPTIONS:
                one(i, option)
        for i in tqdm(range(len(queries)), desc=f"queries ({Path(src).name})", unit="photo"):
            for option in OPTIONS:  # the three options of a photo in a row: the same load on each
                runs[option].append(one(i, option))
    return {"src": src, "engine": search.engine.__file__, "threads": torch.get_num_threads(), "runs": runs}


def run_code(name: str, src: Path, spec: dict, tmp: Path) -> dict:
    """``measure`` in a fresh process with ``src``'s packages (never two versions in one process)."""
    spec_path, out_path = tmp / f"{name}-spec.json", tmp / f"{name}-measured.json"
    spec_path.write_text(json.dumps({**spec, "src": str(src)}))
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path), str(out_path)]
    subprocess.run(cmd, env=env, cwd=src, check=True)
    return json.loads(out_path.read_text())


def merged(done: dict | None, more: dict) -> dict:
    """Two rounds' measurements of one code as one."""
    if done is None:
        return more
    return {**done, "runs": {o: done["runs"][o] + more["runs"][o] for o in OPTIONS}}


def stage_values(runs: list[dict]) -> dict[str, np.ndarray]:
    """Per stage of ``ROWS``, its ms over the queries (NaN where this code does not time it)."""
    out = {}
    for stage in ROWS:
        if stage == "other":
            continue
        out[stage] = np.array([r["ms"].get(stage, np.nan) for r in runs], dtype=float)
    timed = np.nansum([out[s] for s in STAGES], axis=0)
    out["other"] = out["total"] - timed
    return out


def summary(measured: dict) -> dict:
    """Per option and stage: p50, p90 and the share of the summed totals."""
    out = {}
    for option, runs in measured["runs"].items():
        values = stage_values(runs)
        total = float(np.sum(values["total"]))
        out[option] = {
            stage: {
                "p50": float(np.percentile(v, 50)),
                "p90": float(np.percentile(v, 90)),
                "share": float(np.sum(v)) / total if total > 0 else float("nan"),
            }
            for stage, v in values.items()
            if not np.isnan(v).any()
        }
    return out


def _ms(value: float | None) -> str:
    return f"{value:9.1f}" if value is not None else f"{'-':>9}"


def recall(measured: dict, option: str) -> float:
    """Shop recall@k of one option: the share of its scenes whose target the first garment's results hold."""
    runs = measured["runs"][option]
    return float(np.mean([bool(r.get("hit")) for r in runs])) if runs else float("nan")


def _recall(this: dict, base: dict | None, option: str) -> str:
    cell = f"{option} {recall(this, option):.3f}"
    return cell + (f" (base {recall(base, option):.3f})" if base else "")


def print_table(this: dict, base: dict | None) -> None:
    mine = summary(this)
    theirs = summary(base) if base else None
    head = f"{'option':<10} {'stage':<11}"
    if theirs is not None:
        head += f" {'base p50':>9} {'base p90':>9} |"
    head += f" {'p50':>9} {'p90':>9} {'share':>6}" + (f" {'p50 ratio':>9}" if theirs is not None else "")
    print(head)
    for option in OPTIONS:
        for stage in ROWS:
            m = mine[option].get(stage)
            b = theirs[option].get(stage) if theirs is not None else None
            if m is None and b is None:
                continue
            line = f"{option:<10} {stage:<11}"
            if theirs is not None:
                line += f" {_ms(b and b['p50'])} {_ms(b and b['p90'])} |"
            line += f" {_ms(m and m['p50'])} {_ms(m and m['p90'])}"
            line += f" {m['share']:6.1%}" if m and stage in (*STAGES, "other") else f" {'':>6}"
            if theirs is not None:
                ratio = m["p50"] / b["p50"] if m and b and b["p50"] > 0 else None
                line += f" {ratio:9.2f}" if ratio is not None else f" {'-':>9}"
            print(line)
    print(f"{'R@k':<10} " + "  ".join(_recall(this, base, o) for o in OPTIONS))
    garments = [r["garments"] for r in this["runs"]["auto"]]
    print(f"auto found {np.mean(garments):.2f} garments a photo (max {max(garments)})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, help="an index of DUMP (required)")
    p.add_argument("--dump", type=Path, help="the product dump the scenes' garments come from (required)")
    p.add_argument("--queries", type=int, default=60, help="composed shop scenes (photos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both runs")
    p.add_argument("--warmup", type=int, default=3, help="photos searched (each option) before timing")
    p.add_argument(
        "--rounds", type=int, default=3, help="the codes take turns on this many shares of the photos (noise hits both)"
    )
    p.add_argument("--baseline-src", type=Path, help="a checkout of the code to compare with")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="this code's runtime (default torch)")
    p.add_argument(
        "--baseline-runtime", choices=("torch", "onnx"), default="torch", help="the baseline's (one with --runtime)"
    )
    p.add_argument("--json", type=Path, help="write the per-query timings here")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        Path(args.worker[1]).write_text(json.dumps(measure(spec)))
        return 0
    if args.index is None or args.dump is None:
        p.error("--index and --dump are required")
    if args.queries < 1 or args.threads < 1 or args.rounds < 1:
        p.error("--queries, --threads and --rounds must be at least 1")
    if not args.index.is_dir():
        p.error(f"no index at {args.index}: build one with `fashion-search index {args.dump} --models M --out INDEX`")
    if args.baseline_src is not None and not (args.baseline_src / "search" / "engine.py").is_file():
        p.error(f"--baseline-src {args.baseline_src} holds no search/engine.py")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        queries = compose_queries(args.dump, args.queries, args.seed, tmp)
        spec = {"index": str(args.index), "queries": queries, "threads": args.threads, "k": args.k}
        spec["warmup"] = args.warmup
        base, this = None, None
        for r in range(min(args.rounds, len(queries))):  # the codes take turns: a busy spell slows both
            share = {**spec, "queries": queries[r :: args.rounds]}
            if args.baseline_src is not None:
                base_share = {**share, "runtime": args.baseline_runtime}
                base = merged(base, run_code(f"baseline-{r}", args.baseline_src, base_share, tmp))
            this = merged(this, run_code(f"this-{r}", ROOT, {**share, "runtime": args.runtime}, tmp))
    print(
        f"{len(queries)} composed shop scenes of {args.dump}, index {args.index}, torch threads {this['threads']}, "
        f"this code's runtime {args.runtime} (the baseline's {args.baseline_runtime})"
    )
    for name, m in (("baseline", base), ("this code", this)):
        if m is not None:
            print(f"{name}: {m['engine']}")
    print_table(this, base)
    if args.json is not None:
        composed = [{k: v for k, v in q.items() if k != "photo"} for q in queries]  # the photos were temporary
        args.json.write_text(json.dumps({"queries": composed, "baseline": base, "this": this}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
