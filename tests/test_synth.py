import numpy as np

from catalogues.synth import draw_scene, synthesize
from foundation.dump import DumpReport, read_dump
from foundation.schema import default_schema
from foundation.text import category_from_text


def test_reproducible_per_seed(tmp_path):
    a = synthesize(tmp_path / "a", 15, seed=3, progress=False)
    b = synthesize(tmp_path / "b", 15, seed=3, progress=False)
    c = synthesize(tmp_path / "c", 15, seed=4, progress=False)
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    for i in range(15):
        name = f"images/{i:06d}.jpg"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_dump_is_valid_and_consistent(synth_dump):
    schema = default_schema()
    report = DumpReport()
    products = list(read_dump(synth_dump, report=report))
    assert not report.problems, report.problems[:3]
    assert len(products) == 120
    for p in products:
        w, h = p.photos[0].size
        assert 1 <= len(p.boxes) <= 3
        assert all(0 <= b.x0 < b.x1 <= w and 0 <= b.y0 < b.y1 <= h for b in p.boxes)
        assert not schema.attribute_errors(p.attributes)
        assert p.attributes["category"] in [b.category for b in p.boxes]
        # The title names the product, as a seller's would.
        assert category_from_text(p.category_path, p.title) == p.attributes["category"], p.title


def test_boxes_are_tight_around_drawn_pixels():
    rng = np.random.default_rng(0)
    img, garments = draw_scene(["pants"], default_schema(), rng)
    arr = np.asarray(img).astype(int)
    g = garments[0]
    x0, y0, x1, y1 = g.box
    inside = arr[y0:y1, x0:x1]
    # Garment pixels touch all four edges of the box.
    bg = arr[0, 0]
    differs = np.abs(inside - bg).sum(-1) > 60
    assert differs[0].any() and differs[-1].any() and differs[:, 0].any() and differs[:, -1].any()


def test_drawn_colour_is_the_named_colour():
    from catalogues.synth import COLOURS

    schema = default_schema()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        img, (g,) = draw_scene(["bag"], schema, rng)
        if g.attributes["pattern"] != "solid":
            continue
        x0, y0, x1, y1 = g.box
        centre = np.asarray(img)[(y0 + y1) // 2 + (y1 - y0) // 4, (x0 + x1) // 2].astype(int)
        named = np.array(COLOURS[g.attributes["colour"]])
        assert np.abs(centre - named).max() < 60, (g.attributes["colour"], centre)
