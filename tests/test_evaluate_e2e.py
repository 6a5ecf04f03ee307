"""`fashion-search evaluate retrieval` end to end on tiny folders in the shared datasets' layouts.

The folders are drawn by the synthetic catalogue: ``clothing-layout`` holds single-garment photos
(``images/<uuid>.jpg``, ``images.csv``); ``ccp-layout`` holds scenes of 2-3 garments
(``photos/NNNN.jpg``, ``masks/NNNN.png`` with each garment's box filled by its label's index,
``annotations.jsonl``, ``labels.json``). The models are tiny and trained once per session.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalogues.datasets import ccp_split
from catalogues.scenes import compose_for_evaluation
from catalogues.synth import draw_scene
from foundation.schema import default_schema

# Synthetic categories and the labels the real datasets give them.
CLOTHING_LABELS = {
    "t-shirt": "T-Shirt",
    "longsleeve": "Longsleeve",
    "shirt": "Shirt",
    "dress": "Dress",
    "jacket": "Outwear",
    "pants": "Pants",
    "shorts": "Shorts",
    "skirt": "Skirt",
    "shoes": "Shoes",
    "hat": "Hat",
}
CCP_LABELS = {
    "t-shirt": "t-shirt",
    "shirt": "shirt",
    "dress": "dress",
    "jacket": "jacket",
    "pants": "pants",
    "shorts": "shorts",
    "skirt": "skirt",
    "shoes": "shoes",
    "hat": "hat",
    "bag": "bag",
}


def write_clothing_layout(root: Path, n: int, *, seed: int = 0, val_share: float = 0.5) -> Path:
    schema = default_schema()
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cats = list(CLOTHING_LABELS)
    with (root / "images.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "sender_id", "label", "kids", "split"])
        for i in range(n):
            cat = cats[i % len(cats)]
            img, garments = draw_scene([cat], schema, rng)
            name = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i))
            img.save(root / "images" / f"{name}.jpg", quality=92)
            kids = garments[0].attributes.get("age_group") == "kids"
            w.writerow([name, i % 7, CLOTHING_LABELS[cat], str(kids), "val" if rng.random() < val_share else "train"])
    return root


def write_ccp_layout(root: Path, n_val: int, *, seed: int = 0) -> Path:
    """About ``n_val`` photos that fall in ccp's fixed val split, and as many train ones."""
    schema = default_schema()
    labels = ["null", *sorted(set(CCP_LABELS.values())), "hair", "skin"]
    (root / "photos").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    rng = np.random.default_rng(seed)
    cats = list(CCP_LABELS)
    counts = {"val": 0, "train": 0}
    rows = []
    i = 0
    while counts["val"] < n_val or counts["train"] < n_val:
        i += 1
        name = f"{i:04d}"
        split = ccp_split(f"{name}.jpg")
        if counts[split] >= n_val:
            continue
        counts[split] += 1
        chosen = [str(c) for c in rng.choice(cats, size=int(rng.integers(2, 4)), replace=False)]
        img, garments = draw_scene(chosen, schema, rng)
        img.save(root / "photos" / f"{name}.jpg", quality=92)
        mask = np.zeros((img.height, img.width), np.uint8)
        boxes = []
        for g in garments:
            label = CCP_LABELS[g.category]
            x0, y0, x1, y1 = g.box
            mask[y0:y1, x0:x1] = labels.index(label)
            boxes.append({"label": label, "box": [x0, y0, x1, y1], "pixels": (x1 - x0) * (y1 - y0)})
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        rows.append(
            {
                "image": f"photos/{name}.jpg",
                "width": img.width,
                "height": img.height,
                "mask": f"masks/{name}.png",
                "tags": sorted(b["label"] for b in boxes),
                "boxes": boxes,
            }
        )
    (root / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return write_clothing_layout(root / "clothing", 120, seed=3), write_ccp_layout(root / "ccp", 6, seed=4)


def _paste_side_by_side(target, others, rng):
    """A plain composer for the stand-in run: each garment shrunk into its own cell of a plain canvas."""
    canvas = Image.new("RGB", (240, 240), tuple(int(v) for v in rng.integers(0, 256, 3)))
    boxes = []
    for i, im in enumerate([target, *others]):
        im = im.copy()
        im.thumbnail((110, 110))
        x, y = 5 + 120 * (i % 2), 5 + 120 * (i // 2)
        canvas.paste(im, (x, y))
        boxes.append((x, y, x + im.width, y + im.height))
    return canvas, boxes


@pytest.mark.slow  # the whole retrieval evaluation, report and plots included: ~2.5 s
def test_evaluation_runs_end_to_end(layouts, tmp_path):
    """The orchestration, metrics.json and the report, with the indexer tests' stand-ins for the attribute
    model and the detector and an untrained GoogLeNet coder.

    No trained models: an attribute model trained within this file's time budget (3 epochs at
    32 px, 14 s) picked the right category for 1 query in 20, so option 1 and 3 recall was 0.05
    and a floor on it would say nothing; the detector's code is not in the repository yet.
    """
    from appearance.model import untrained_coder
    from evaluation.retrieval import RetrievalEvalConfig, RetrievalInputs, evaluate_retrieval
    from indexer.describe import Describer
    from tests.indexer_fakes import FakeDetector, FakePredictor
    from tests.test_evaluate import parse_report

    clothing, ccp = layouts
    describer = Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=untrained_coder(image_size=32))
    (tmp_path / "models").mkdir()
    out = tmp_path / "report"
    result = evaluate_retrieval(
        RetrievalInputs(clothing, ccp, tmp_path / "models"),
        out,
        describer=describer,
        compose=_paste_side_by_side,
        config=RetrievalEvalConfig(queries=12, batch=8, cases=2),
        progress=False,
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(result["metrics"]))
    assert saved["queries"]["shop"] == 12 and saved["queries"]["street-photo"] == 6
    shop = saved["metrics"]["shop"]["systems"]
    assert set(shop) == {
        "auto",
        "guided",
        "rectangle",
        "float auto",
        "float guided",
        "float rectangle",
        "colour only",
        "whole-image code",
        "auto garments",
    }
    looks = shop["auto garments"]  # auto's every garment, in DeepFashion2's protocol
    assert set(looks) == {
        "offered",
        "R@1",
        "R@10",
        "first R@10",
        "first R@10, largest first",
        "first is the target",
        "first is the target by chance",
        "garments offered",
        "queries",
    }
    assert 0 <= looks["R@1"] <= looks["R@10"] <= looks["offered"] <= 1 and looks["queries"] == 12
    street = saved["metrics"]["street-photo"]["systems"]["auto garments"]
    assert 0 <= street["offered"] <= 1 and 0 <= street["P@10"] <= 1 and street["queries"] == 6
    # Guided search stays in the true category: every result is right at the category level
    # whenever the category holds at least k products.
    assert shop["guided"]["category_right"] == 1.0
    # Floors under what this run measured (seed 0, 12 scenes): guided R@1 0.42 among ~6 of its
    # category (chance 0.17; the default ranking weights the untrained code most, and colour, which
    # alone finds these unchanged pastes, little: 0.83 with the colour-heavy weights of before);
    # colour only R@10 1.0 over the whole ~60-product catalogue (the target pasted unchanged).
    assert shop["guided"]["R@1"] >= 0.3
    assert shop["colour only"]["R@10"] >= 0.75
    parsed = parse_report((out / "index.html").read_text(encoding="utf-8"))
    assert parsed.tables == 5  # shop, street, shop the look, per-query timings, run stages
    assert "rectangle" in parsed.cells and "whole-image code" in parsed.cells
    plots = [s for s in parsed.images if s.startswith("data:image/png;base64,")]
    thumbs = [s for s in parsed.images if s.startswith("data:image/jpeg;base64,")]
    assert len(plots) == 4 and len(thumbs) >= 8


def _garment_photo(colour, size=(200, 260)) -> Image.Image:
    """A product shot: a solid garment-like shape on a white studio background."""
    from PIL import ImageDraw

    im = Image.new("RGB", size, (250, 250, 250))
    w, h = size
    ImageDraw.Draw(im).polygon(
        [(w * 0.3, h * 0.1), (w * 0.7, h * 0.1), (w * 0.85, h * 0.9), (w * 0.15, h * 0.9)], fill=colour
    )
    return im


def test_composer_boxes_are_where_the_pasted_garments_are():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        # The target is near-black: the composer's backgrounds (channels 40-250) and the other,
        # saturated garments never are, so near-black pixels mark where the target landed.
        scene, boxes = compose_for_evaluation(
            _garment_photo((8, 8, 8)),
            [_garment_photo((230, 40, 40)), _garment_photo((40, 200, 60))][: 1 + seed % 2],
            rng,
        )
        arr = np.asarray(scene).astype(int)
        assert len(boxes) == 2 + seed % 2
        dark = arr.max(axis=2) < 45
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[0])
        assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height
        inside = dark[y0:y1, x0:x1].sum()
        assert inside >= 0.98 * dark.sum()  # the target is inside its box ...
        assert inside >= 0.3 * (x1 - x0) * (y1 - y0)  # ... and fills it as a garment shape does
        for box in boxes[1:]:  # the other garments' boxes hold their colour, not the target
            bx0, by0, bx1, by1 = (int(round(v)) for v in box)
            assert dark[by0:by1, bx0:bx1].sum() <= 0.02 * dark.sum()
            assert (arr[by0:by1, bx0:bx1].max(axis=2) - arr[by0:by1, bx0:bx1].min(axis=2) > 100).mean() > 0.3
