"""Peak memory and latency of one upload of 1, 12, 50 and 81 megapixels, beside a full decode.

Each measurement runs in a fresh process (peak RSS is per process): the photo is a JPEG of
that size; ``prepared`` is the one describe path's ``prepare_image`` (JPEG draft decode, shrink
to the working side, blank check, thumbnail), ``search`` adds the engine's describe and index
search on a small stand-in index, and ``full decode`` is what the service did before: decode
every pixel (``load_image``) before anything else.

    python benchmarks/upload_cost.py [--sizes 1,12,50,81]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _photo(megapixels: float, path: Path) -> None:
    import numpy as np
    from PIL import Image

    side = int((megapixels * 1e6) ** 0.5)
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    small.resize((side, side), Image.Resampling.BILINEAR).save(path, "JPEG", quality=85)


def _child(mode: str, photo: str, index: str | None) -> None:
    """Runs in its own process: one measurement, printed as JSON."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    engine = None
    if mode == "search":
        from search.query import Query
        from tests.standin import open_standin_engine, standin_describer

        engine = open_standin_engine(index, standin_describer())
    data = Path(photo).read_bytes()
    # ru_maxrss survives exec (it would hold the parent's peak): reset the kernel's peak instead
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if mode == "full decode":
        from foundation.images import load_image

        load_image(data)
    elif mode == "prepared":
        from indexer.prepare import prepare_image

        prepare_image(data)
    else:
        engine.search(Query.search(data, "guided", category="dress", k=10))
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "added_mb": peak - base}))


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,12,50,81", help="megapixels, comma-separated")
    p.add_argument("--child", nargs=3, metavar=("MODE", "PHOTO", "INDEX"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.child[2])
        return 0
    sys.path.insert(0, str(ROOT))
    from catalogues.synth import synthesize
    from tests.standin import build_standin_index, standin_describer

    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dump = synthesize(tmp / "catalogue", 24, 0, progress=False)
        index = build_standin_index(dump, tmp / "index", standin_describer(), n=24)
        rows = []
        for mp in sizes:
            photo = tmp / f"{mp:g}mp.jpg"
            _photo(mp, photo)
            row = {"megapixels": mp, "bytes": photo.stat().st_size}
            for mode in ("full decode", "prepared", "search"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(photo), str(index)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                row[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
    print(
        f"{'MP':>4} {'JPEG MB':>8} | {'full decode: s':>14} {'peak MB':>8} | {'prepared: s':>11} {'peak MB':>8} "
        f"| {'search: s':>9} {'peak MB':>8}"
    )
    for r in rows:
        f, pr, s = r["full decode"], r["prepared"], r["search"]
        print(
            f"{r['megapixels']:>4g} {r['bytes'] / 1e6:>8.2f} | {f['seconds']:>14.3f} {f['peak_mb']:>8.0f} "
            f"| {pr['seconds']:>11.3f} {pr['peak_mb']:>8.0f} | {s['seconds']:>9.3f} {s['peak_mb']:>8.0f}"
        )
    first, last = rows[0], rows[-1]
    print(
        f"search peak memory, {last['megapixels']:g} MP over {first['megapixels']:g} MP: "
        f"{last['search']['peak_mb'] / first['search']['peak_mb']:.2f}x (full decode: "
        f"{last['full decode']['peak_mb'] / first['full decode']['peak_mb']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
