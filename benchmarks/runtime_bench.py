"""PyTorch eager against ONNX Runtime, model by model, on real photos, with the parity between them.

Each model's part that ``--runtime onnx`` moves (``foundation.runtime``): the appearance network,
the attribute model's image encoder, the detector's backbone + FPN (its int8 graph where ``export
onnx --calibration`` made one) and box head (int8, on 100 pooled proposals); plus the whole
detector pass (``GarmentDetector.raw``: resize, backbone, RPN, RoI pooling, box head), and a crop
(the photo itself) read by both crop readers, by two passes and by their shared stages (``indexer.stem``; where the
models share some). One photo at a time (batch 1, as a query), at each thread count (torch's and
ONNX Runtime's alike), after a warm-up; median and p90 in ms over ``--repeats`` calls cycling
through the photos. The photos are the dump's rows, prepared as a query's are
(``indexer.prepare``: oriented, shrunk to the working size). The parity rows compare the two
runtimes on every photo: appearance codes (Hamming distance, bits), attribute features (max abs
difference) and the auto category they lead to, the backbone's levels and the detector's first
garment (the same category and box at IoU >= 0.95; its category; the mean IoU of the two boxes);
and the shared pass against two passes on each runtime (features, codes).

Graphs missing from ``--models`` are exported there first (a minute or two per model).

    python benchmarks/runtime_bench.py --models MODELS --dump data/val/products.jsonl [--photos 8]
        [--repeats 30] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_photos(dump: Path, n: int) -> list:
    """The first ``n`` readable photos of the dump, prepared as a query's are."""
    from indexer.prepare import prepare_image

    photos = []
    with dump.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            image = row.get("image") or (row.get("images") or [None])[0]
            if image is None:
                continue
            path = Path(image) if Path(image).is_absolute() else dump.parent / image
            try:
                photos.append(prepare_image(path).image)
            except Exception as exc:  # a bad photo of the dump: the next one
                print(f"skipped {path}: {exc}", file=sys.stderr)
            if len(photos) == n:
                break
    if not photos:
        raise SystemExit(f"no readable photo in {dump}")
    return photos


def timed(calls: list, inputs: list, repeats: int, warmup: int = 3) -> list[tuple[float, float]]:
    """Per call, (median, p90) ms of ``call(x)``, cycling through ``inputs``; the calls take turns
    input by input, so a busy spell of the machine slows every one alike."""
    for i in range(warmup):
        for call in calls:
            call(inputs[i % len(inputs)])
    ms: list[list[float]] = [[] for _ in calls]
    for i in range(repeats):
        for j, call in enumerate(calls):
            t0 = time.perf_counter()
            call(inputs[i % len(inputs)])
            ms[j].append((time.perf_counter() - t0) * 1e3)
    return [(float(np.median(m)), float(np.percentile(m, 90))) for m in ms]


def load_pair(models: Path) -> dict:
    """Each model loaded on both runtimes: name -> (torch, onnx)."""
    from appearance.model import AppearanceCoder
    from attributes.predict import AttributePredictor
    from detector.predict import GarmentDetector
    from indexer.stem import SharedStem

    pair = {
        "appearance": tuple(AppearanceCoder.load(models, runtime=r) for r in ("torch", "onnx")),
        "attributes": tuple(AttributePredictor.load(models, runtime=r) for r in ("torch", "onnx")),
        "detector": tuple(GarmentDetector.load(models, runtime=r) for r in ("torch", "onnx")),
    }
    (pred_t, pred_o), (coder_t, coder_o) = pair["attributes"], pair["appearance"]
    pair["stem"] = (SharedStem.of(pred_t, coder_t), SharedStem.open(models, pred_o, coder_o))
    return pair


def cases(models: dict, photos: list) -> list[tuple[str, object, object, list]]:
    """(row name, torch call, onnx call, inputs) of each timed part, batch 1. Rows on the same
    inputs (the photos) are timed taking turns (``timings``)."""
    import torch

    coder_t, coder_o = models["appearance"]
    pred_t, pred_o = models["attributes"]
    det_t, det_o = models["detector"]
    app_x = [coder_t.tensor([p]) for p in photos]
    attr_x = [pred_t.preprocess.batch([p]) for p in photos]
    with torch.inference_mode():
        det_x = [det_t.model.transform([det_t.preprocess(p)])[0].tensors for p in photos]
    heads_t, heads_o = det_t.model.roi_heads, det_o.model.roi_heads
    rois = [
        torch.randn(100, det_t.model.backbone.out_channels, 7, 7, generator=torch.Generator().manual_seed(0)).relu()
    ]
    out = [
        ("appearance network", coder_t.runner, coder_o.runner, app_x),
        ("attribute encoder", pred_t.model.encoder, pred_o.model.encoder, attr_x),
        ("detector backbone+FPN", det_t.model.backbone, det_o.model.backbone, det_x),
        ("detector box head", lambda x: heads_t.box_predictor(heads_t.box_head(x)), heads_o.box_predictor, rois),
        ("detector, whole pass", lambda p: det_t.raw([p]), lambda p: det_o.raw([p]), photos),
        ("crop, two passes", lambda p: _apart(pred_t, coder_t, [p]), lambda p: _apart(pred_o, coder_o, [p]), photos),
    ]
    stem_t, stem_o = models["stem"]
    if stem_t is not None and stem_o is not None:
        shared = (lambda p: stem_t.read(pred_t, coder_t, [p]), lambda p: stem_o.read(pred_o, coder_o, [p]))
        out.append(("crop, shared stages", *shared, photos))
    return out


def _apart(predictor, coder, crops: list) -> tuple:
    """Crops read as the two crop readers read them without a shared pass: (features, codes)."""
    return predictor.features(crops), coder.encode(crops)


def timings(models: dict, photos: list, threads: list[int], repeats: int) -> list[dict]:
    import torch

    rows = []
    for n in threads:
        torch.set_num_threads(n)  # ONNX Runtime's sessions follow it (foundation.runtime)
        parts = cases(models, photos)
        groups: dict[int, list] = {}  # the parts on the same inputs, timed together
        for part in parts:
            groups.setdefault(id(part[3]), []).append(part)
        measured = {}
        for group in groups.values():
            calls = [call for _name, ours_t, ours_o, _inputs in group for call in (ours_t, ours_o)]
            with torch.inference_mode():
                figures = timed(calls, group[0][3], repeats)
            for k, (name, *_rest) in enumerate(group):
                measured[name] = (figures[2 * k], figures[2 * k + 1])
        rows += [
            {"part": name, "threads": n, "torch": measured[name][0], "onnx": measured[name][1]} for name, *_ in parts
        ]
    return rows


def parity(models: dict, photos: list) -> dict:
    import torch

    coder_t, coder_o = models["appearance"]
    codes_t, codes_o = coder_t.encode(photos), coder_o.encode(photos)
    hamming = np.unpackbits(codes_t ^ codes_o, axis=1).sum(1)
    pred_t, pred_o = models["attributes"]
    feats_t, feats_o = pred_t.features(photos), pred_o.features(photos)
    auto_t, auto_o = pred_t.predict(photos), pred_o.predict(photos)
    det_t, det_o = models["detector"]
    level_diff, garments_same, category_same, ious = 0.0, 0, 0, []
    with torch.inference_mode():
        for p in photos:
            x = det_t.model.transform([det_t.preprocess(p)])[0].tensors
            a, b = det_t.model.backbone(x), det_o.model.backbone(x)
            level_diff = max(level_diff, max(float((a[k] - b[k]).abs().max()) for k in a))
            g_t, g_o = det_t.garments(det_t.raw([p])[0]), det_o.garments(det_o.raw([p])[0])
            if not g_t or not g_o:
                garments_same += not g_t and not g_o
                category_same += not g_t and not g_o
                continue
            ious.append(_iou(g_t[0].box, g_o[0].box))
            category_same += g_t[0].category == g_o[0].category
            garments_same += g_t[0].category == g_o[0].category and ious[-1] >= 0.95
    shared = {}
    for runtime, stem, predictor, coder in zip(("torch", "onnx"), models["stem"], (pred_t, pred_o), (coder_t, coder_o)):
        if stem is not None:
            feats, codes, _ = stem.read(predictor, coder, photos)
            apart_feats, apart_codes = _apart(predictor, coder, photos)
            shared[runtime] = {
                "features_max_abs_diff": float((feats - apart_feats).abs().max()),
                "hamming_max": int(np.unpackbits(codes ^ apart_codes, axis=1).sum(1).max()),
            }
    return {
        "photos": len(photos),
        "code_bits": int(coder_t.dims),
        "hamming_max": int(hamming.max()),
        "hamming_mean": float(hamming.mean()),
        "attribute_features_max_abs_diff": float((feats_t - feats_o).abs().max()),
        "auto_category_agree": sum(a.category == b.category for a, b in zip(auto_t, auto_o)),
        "attributes_agree": sum(
            {g: v for g, (v, _) in a.attributes.items()} == {g: v for g, (v, _) in b.attributes.items()}
            for a, b in zip(auto_t, auto_o)
        ),
        "backbone_levels_max_abs_diff": level_diff,
        "first_garment_agree": garments_same,
        "first_garment_category_agree": category_same,
        "first_garment_mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "shared_stages_vs_two_passes": shared,
    }


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def print_report(rows: list[dict], same: dict) -> None:
    print(
        f"{'part (batch 1)':<24} {'threads':>7} {'torch p50':>10} {'p90':>7} {'onnx p50':>9} {'p90':>7} {'speed-up':>8}"
    )
    for r in rows:
        (tp50, tp90), (op50, op90) = r["torch"], r["onnx"]
        print(
            f"{r['part']:<24} {r['threads']:>7} {tp50:>10.1f} {tp90:>7.1f} {op50:>9.1f} {op90:>7.1f} {tp50 / op50:>7.2f}x"
        )
    n = same["photos"]
    print(
        f"parity on {n} photos: appearance codes max Hamming {same['hamming_max']} of {same['code_bits']} bits "
        f"(mean {same['hamming_mean']:.2f}); attribute features max |diff| {same['attribute_features_max_abs_diff']:.2e}, "
        f"auto category agrees {same['auto_category_agree']}/{n}, all attributes {same['attributes_agree']}/{n}; "
        f"backbone levels max |diff| {same['backbone_levels_max_abs_diff']:.2e}, first garment agrees "
        f"{same['first_garment_agree']}/{n} (its category {same['first_garment_category_agree']}/{n}, "
        f"mean IoU {same['first_garment_mean_iou']:.3f})"
    )
    for runtime, d in same["shared_stages_vs_two_passes"].items():
        print(
            f"shared stages against two passes on {runtime}: features max |diff| {d['features_max_abs_diff']:.2e}, "
            f"codes max Hamming {d['hamming_max']}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, required=True, help="trained models (graphs exported there when missing)")
    p.add_argument("--dump", type=Path, required=True, help="a product dump whose photos are measured")
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    import torch

    from indexer.graphs import export_graphs

    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])
    exported = export_graphs(args.models)
    print("graphs:", ", ".join(f"{k} ({'exported now' if v['exported'] else 'cached'})" for k, v in exported.items()))
    photos = read_photos(args.dump, args.photos)
    models = load_pair(args.models)
    same = parity(models, photos)
    rows = timings(models, photos, threads, args.repeats)
    print(f"{len(photos)} photos of {args.dump}, models {args.models}, torch {torch.__version__}")
    print_report(rows, same)
    if args.json:
        args.json.write_text(json.dumps({"timings": rows, "parity": same}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
