"""Scenes: ccp instance boxes from masks, garment masks, composed scenes and their dumps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalogues.scenes import (
    MAX_COVER,
    SceneConfig,
    _cover,
    ccp_instances,
    compose_for_evaluation,
    compose_on_photo,
    compose_scene,
    convert_ccp,
    convert_scenes,
    garment_mask,
)
from foundation.dump import read_dump
from foundation.schema import default_schema


def test_shoe_pairs_split_and_tiny_parts_dropped():
    labels = ["null", "shoes", "jeans", "skin"]
    mask = np.zeros((200, 200), np.uint8)
    mask[150:180, 20:60] = 1  # left shoe
    mask[150:180, 120:170] = 1  # right shoe
    mask[10:100, 40:80] = 2  # jeans in two parts: still one instance
    mask[10:100, 100:140] = 2
    mask[0:5, 190:193] = 1  # stray shoe pixels
    mask[100:140, 0:200] = 3  # skin: left out
    boxes = ccp_instances(mask, labels, default_schema())
    assert sorted(boxes) == sorted(
        [[20, 150, 60, 180, "shoes"], [120, 150, 170, 180, "shoes"], [40, 10, 140, 100, "jeans"]]
    )


def test_garment_mask_finds_a_garment_on_a_plain_background():
    image = Image.new("RGB", (200, 240), (235, 235, 230))
    ImageDraw.Draw(image).rectangle((50, 40, 150, 200), fill=(30, 60, 160))
    mask = garment_mask(image)
    inside, outside = mask[60:180, 70:130].mean(), np.r_[mask[:30].ravel(), mask[215:].ravel()].mean()
    assert inside > 0.9 and outside < 0.05


def test_compose_scene_boxes_hold_the_garments():
    rng = np.random.default_rng(0)
    garments = []
    for i, colour in enumerate([(200, 20, 20), (20, 200, 20), (20, 20, 200)]):
        im = Image.new("RGB", (100, 120), colour)
        garments.append((im, np.ones((120, 100), bool), ["pants", "hat", "bag"][i], f"p{i}"))
    scene, placed = compose_scene(garments, rng, canvas_size=(300, 300), transform=False)
    assert scene.size == (300, 300) and [c for _, c, _ in placed] == ["pants", "hat", "bag"]
    arr = np.asarray(scene).astype(int)
    for (x0, y0, x1, y1), _, sid in placed:
        colour = np.array(garments[int(sid[1])][0].getpixel((0, 0)))
        region = arr[int(y0) : int(y1), int(x0) : int(x1)]
        assert np.abs(region - colour).sum(-1).mean() < 10
    scene, boxes = compose_for_evaluation(garments[0][0], [garments[1][0]], rng)
    assert len(boxes) == 2 and all(0 <= b[0] < b[2] <= scene.width and 0 <= b[1] < b[3] <= scene.height for b in boxes)


def test_compose_on_photo_keeps_the_photos_boxes_and_pastes_beside_them():
    rng = np.random.default_rng(0)
    photo = Image.new("RGB", (400, 600), (90, 110, 120))
    ImageDraw.Draw(photo).rectangle((150, 100, 260, 400), fill=(200, 40, 40))  # a "person" in a red coat
    own = [[150, 100, 260, 400, "coat"], [160, 520, 200, 560, "shoes"]]
    cutout = Image.new("RGB", (100, 120), (20, 200, 20))
    garments = [(cutout, np.ones((120, 100), bool), "hat", f"p{i}") for i in range(3)]
    scene, boxes = compose_on_photo(photo, own, garments, rng)
    assert scene.size == photo.size and boxes[:2] == own and 2 <= len(boxes) <= 5
    arr = np.asarray(scene).astype(int)
    for box in boxes[2:]:
        assert box[4] == "hat" and 0 <= box[0] < box[2] <= 400 and 0 <= box[1] < box[3] <= 600
        region = arr[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])]
        assert (np.abs(region - [20, 200, 20]).sum(-1) < 150).mean() > 0.6  # the pasted (rotated) garment
        for other in boxes:
            if other is not box:
                assert _cover(other[:4], box[:4]) <= MAX_COVER and _cover(box[:4], other[:4]) <= MAX_COVER


@pytest.mark.slow  # converts the shared ccp val split (its size, not a fixed one): ~2 s
def test_convert_ccp_and_scenes(ccp_dir, clothing_dir, tmp_path):
    dump, counts = convert_ccp(ccp_dir, tmp_path / "ccp", split="val", progress=False)
    products = list(read_dump(dump))
    assert len(products) == counts["products"] > 50
    assert sum(b.category == "shoes" for p in products for b in p.boxes) > len(products)  # pairs split
    dump, counts = convert_scenes(
        clothing_dir, tmp_path / "scenes", SceneConfig(n=4, seed=1, split="val"), progress=False
    )
    products = list(read_dump(dump))
    assert len(products) == 4 and all(1 <= len(p.boxes) <= 4 for p in products)
    dump, counts = convert_scenes(
        clothing_dir, tmp_path / "street", SceneConfig(n=3, seed=1, split="val", backgrounds=ccp_dir), progress=False
    )
    products = list(read_dump(dump))
    assert len(products) == 3 and counts["pasted"] >= 1 and counts["boxes"] == sum(len(p.boxes) for p in products)
