"""The detector's box head at inference, lighter settings beside the trained one's, from one run.

    .venv/bin/python benchmarks/detector_head.py --models MODELS --dump DUMP [--latency 60]
        [--proposals 100 50] [--onnx] [--json F]

For each setting (RoI pooling's samples per bin side, proposals kept after the RPN's NMS) it
prints Table 3 on the dump's boxes (``detector.evaluate``: class-agnostic, guided and non-guided
mAP, guided box recall) and the detector's whole pass per image at batch 1 on one thread (p50 over
the dump's first ``--latency`` photos, the settings taking turns photo by photo, so a busy spell
hits every setting alike). The first row is training's (torchvision's 2 samples, 100 proposals);
``detector.predict.ROI_SAMPLING_RATIO`` is what serving uses. ``--onnx`` adds ONNX Runtime's rows
at the serving setting (the graphs exported into MODELS first, when missing): the float backbone's
graph with torch's float box head, then with the box head's int8 graph, then as ``--runtime onnx``
serves (the backbone's int8 graph too, where ``export onnx --calibration`` made one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from detector.evaluate import evaluate_model  # noqa: E402
from detector.predict import (  # noqa: E402
    BACKBONE_GRAPH,
    ROI_SAMPLING_RATIO,
    GarmentDetector,
    OnnxBackbone,
    set_roi_sampling,
)
from foundation.images import load_image  # noqa: E402
from foundation.runtime import open_graph  # noqa: E402

FIGURES = (("garments", "map@0.5"), ("guided", "map@0.5"), ("guided", "map@0.8"), ("non_guided", "map@0.5"))


ONNX_ROWS = ("onnx: float", "onnx: int8 box head", "onnx: int8")  # the last as served, when calibrated


def _detector(models: Path, ratio: int, proposals: int, runtime: str = "torch") -> GarmentDetector:
    det = GarmentDetector.load(models, runtime="torch" if runtime == "torch" else "onnx")
    set_roi_sampling(det.model, ratio)
    det.model.rpn._post_nms_top_n["testing"] = proposals  # torchvision keeps it per mode in a dict
    if runtime in ONNX_ROWS[:2]:  # the float backbone's graph
        det.model.backbone = OnnxBackbone(open_graph(BACKBONE_GRAPH, models), det.model.backbone.out_channels)
    if runtime == ONNX_ROWS[0]:  # torch's own box head behind it
        heads = GarmentDetector.load(models).model.roi_heads
        det.model.roi_heads.box_head, det.model.roi_heads.box_predictor = heads.box_head, heads.box_predictor
    return det


def _photos(dump: Path, n: int) -> list:
    rows = [json.loads(line) for line in dump.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [load_image(dump.parent / r["image"]) for r in rows[:n]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--dump", required=True, type=Path, help="a dump with garment boxes (ccp val)")
    p.add_argument("--latency", type=int, default=60, help="photos timed per setting")
    p.add_argument("--proposals", type=int, nargs="+", default=[100, 50], help="proposals kept, each tried")
    p.add_argument("--onnx", action="store_true", help="add ONNX Runtime's rows at the serving setting")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    # (samples per bin side, proposals, runtime)
    settings = [(ratio, n, "torch") for n in args.proposals for ratio in (2, 1)]
    if args.onnx:
        from indexer.graphs import export_graphs

        export_graphs(args.models, models=["detector"])
        settings += [(ROI_SAMPLING_RATIO, args.proposals[0], r) for r in ONNX_ROWS]
    detectors = {s: _detector(args.models, *s) for s in settings}
    tables = {s: evaluate_model(det, args.dump, progress=False) for s, det in detectors.items()}
    torch.set_num_threads(1)
    times: dict = {s: [] for s in settings}
    for im in _photos(args.dump, args.latency):
        for s, det in detectors.items():
            t0 = time.perf_counter()
            det.raw([im])
            times[s].append((time.perf_counter() - t0) * 1e3)
    head = "".join(f"{g} {f}".rjust(20) for g, f in FIGURES)
    print(f"Detector box head on {tables[settings[0]]['images']} photos of {args.dump}")
    print(f"{'samples':>7} {'proposals':>9} {'runtime':>20}{head}{'recall@0.5':>12}{'p50 ms':>9}")
    rows = {}
    for s, t in tables.items():
        figures = {f"{g} {f}": round(t[g][f], 4) for g, f in FIGURES}
        rows[f"samples {s[0]}, proposals {s[1]}, {s[2]}"] = {
            **figures,
            "recall@0.5": round(t["recall@0.5"], 4),
            "p50 ms": round(statistics.median(times[s]), 1),
        }
        cells = "".join(f"{v:20.3f}" for v in figures.values())
        print(f"{s[0]:>7} {s[1]:>9} {s[2]:>20}{cells}{t['recall@0.5']:12.3f}{statistics.median(times[s]):9.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
