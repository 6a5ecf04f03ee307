"""Bulk indexing end to end, runtime beside runtime: photos/s, each stage's share, each core's idle time.

    .venv/bin/python benchmarks/bulk_throughput.py --models MODELS --dump DUMP [--n 600]
        [--runtimes torch onnx] [--workers 2] [--describe-workers 0 2] [--batch-size 32]
        [--baseline-src DIR] [--json F]

Indexes the dump's first ``--n`` products into a fresh index once per runtime (``fashion-search
index``'s own ``build_index``: decode workers, the three models in batches, LMDB writes) and prints,
side by side (and once per ``--describe-workers`` count: 0 describes batches in this process, N
has N processes each decode and describe with their own models on one thread): photos/s and
products/s end to end, seconds per stage and its share (decode is CPU
time summed over the workers), and how long each core sat idle during the run (``/proc/stat``).
``--runtime onnx`` needs the graphs ``fashion-search export onnx --models MODELS`` writes.
``--baseline-src DIR`` (another commit's tree, e.g. ``git archive REV | tar -x -C DIR``) runs that
tree's own copy of this script on the same products just before each of ours, in a process of its
own, and prints its columns beside ours ("base").
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.bulk import STAGES, BulkConfig, build_index  # noqa: E402


def core_times() -> dict[str, tuple[float, float]]:
    """Per core: (idle, total) jiffies since boot (``/proc/stat``; empty where there is none)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [float(x) for x in values]
            out[name] = (v[3] + v[4], sum(v[:8]))  # idle + iowait, of user..steal
    return out


def idle_shares(before: dict, after: dict) -> dict[str, float]:
    return {
        c: round((after[c][0] - before[c][0]) / max(after[c][1] - before[c][1], 1e-9), 3) for c in after if c in before
    }


def subset(dump: Path, n: int, out: Path) -> Path:
    """The dump's first ``n`` rows, relative image paths made absolute."""
    rows = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    for row in rows:
        for key in ("image", "images"):
            if key in row:
                paths = row[key] if isinstance(row[key], list) else [row[key]]
                fixed = [str((dump.parent / p).resolve()) for p in paths]
                row[key] = fixed if isinstance(row[key], list) else fixed[0]
    path = out / "products.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(dump: Path, models: Path, out: Path, config: BulkConfig) -> dict:
    before, t0 = core_times(), time.perf_counter()
    s = build_index(dump, models, out, config)
    wall, after = time.perf_counter() - t0, core_times()
    return {**s, "wall": round(wall, 2), "idle": idle_shares(before, after)}


def run_baseline(src: Path, dump: Path, models: Path, args, setting: tuple[str, int]) -> dict:
    """The figures of ``src``'s own bulk benchmark for one (runtime, describe workers) setting."""
    rt, dw = setting
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "base.json"
        cmd = [sys.executable, str(src / "benchmarks" / "bulk_throughput.py"), "--models", str(models)]
        cmd += ["--dump", str(dump), "--n", str(args.n), "--runtimes", rt, "--workers", str(args.workers)]
        cmd += ["--describe-workers", str(dw), "--batch-size", str(args.batch_size), "--json", str(out)]
        env = {**os.environ, "PYTHONPATH": str(src)}
        done = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the baseline's benchmark failed:\n{done.stderr[-2000:]}")
        (figures,) = json.loads(out.read_text()).values()
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--dump", required=True, type=Path)
    p.add_argument("--n", type=int, default=600, help="products indexed per runtime")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=("torch", "onnx"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--describe-workers", type=int, nargs="+", default=[0], help="each tried per runtime (0: batched here)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--baseline-src", type=Path, help="another commit's tree, run beside each setting")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    models = args.models.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        dump = subset(args.dump, args.n, Path(tmp))
        for rt in args.runtimes:
            for dw in args.describe_workers:
                cfg = BulkConfig(
                    workers=args.workers, describe_workers=dw, batch_size=args.batch_size, runtime=rt, progress=False
                )
                name = rt if dw == 0 else f"{rt}, {dw} procs"
                if args.baseline_src:
                    results[f"{name} base"] = run_baseline(args.baseline_src.resolve(), dump, models, args, (rt, dw))
                results[name] = run(dump, models, Path(tmp) / f"index-{rt}-{dw}", cfg)
    names = list(results)
    print(f"Bulk indexing of {args.n} products of {args.dump} ({args.workers} decode workers, batch {args.batch_size})")
    print(f"{'':<22}" + "".join(f"{rt:>18}" for rt in names))
    for label, key in (
        ("photos", "photos"),
        ("seconds", "wall"),
        ("photos/s", "images_per_s"),
        ("products/s", "products_per_s"),
    ):
        print(f"{label:<22}" + "".join(f"{results[rt][key]:>18}" for rt in names))
    for stage in STAGES:
        cells = "".join(
            f"{results[rt]['stage_seconds'][stage]:>11.1f}s {results[rt]['stage_share'][stage]:>5.0%}" for rt in names
        )
        print(f"  {stage:<20}{cells}")
    for core in sorted(results[names[0]]["idle"]):
        print(f"{core + ' idle':<22}" + "".join(f"{results[rt]['idle'].get(core, 0):>18.0%}" for rt in names))
    if args.json:
        keep = ("photos", "wall", "images_per_s", "products_per_s", "stage_seconds", "stage_share", "idle")
        args.json.write_text(json.dumps({rt: {k: r[k] for k in keep} for rt, r in results.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
