"""describe(): category precedence, ROI sources, codes and colours, batching (fake models)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from indexer.describe import Describer
from tests.indexer_fakes import FakeDetector, FakePredictor, fake_models


@pytest.fixture(scope="module")
def describer(tmp_path_factory):
    from appearance.model import AppearanceCoder

    models = fake_models(tmp_path_factory.mktemp("models"))
    return Describer(predictor=FakePredictor(), detector=FakeDetector(), coder=AppearanceCoder.load(models))


def _image(colour=(200, 30, 35), size=(160, 120)) -> Image.Image:
    im = Image.new("RGB", size, (250, 250, 250))
    ImageDraw.Draw(im).rectangle([40, 24, 120, 108], fill=colour)
    return im


def test_guided_uses_the_guide_and_the_guided_detector(describer):
    (d,) = describer.describe([_image()], guides=["pants"])
    assert d.category == "pants" and d.categories == [("pants", 1.0)]
    assert describer.detector.calls[-1] == ["pants"]
    assert d.roi == (40, 24, 120, 108) and not d.fallback  # the fake's central box
    assert d.code.shape == (232,) and d.code.dtype == np.uint8
    assert d.colour.shape == (describer.colour.bins,) and abs(float(d.colour.astype(np.float32).sum()) - 1) < 1e-2
    assert set(d.timings_ms) == {"attributes", "detector", "appearance", "colour"}


def test_auto_takes_the_models_category_and_guides_the_detector_with_it(describer):
    (d,) = describer.describe([_image()])
    assert d.category in FakePredictor.AUTO
    assert describer.predictor.calls[-1] == [None]  # auto decoding
    assert describer.detector.calls[-1] == [d.category]
    assert d.categories[0][0] == d.category


def test_weigh_by_presence_lets_the_detector_say_which_garments_and_the_model_what_each_is():
    from foundation.schema import default_schema
    from indexer.describe import PRESENCE_FLOOR, weigh_by_presence

    great = default_schema().great_category
    guess = [("dress", 0.6), ("t-shirt", 0.2), ("shirt", 0.1), ("pants", 0.1)]
    kept = weigh_by_presence(guess, {}, great)  # no evidence: the model's own distribution
    assert [c for c, _ in kept] == ["dress", "t-shirt", "shirt", "pants"]
    assert [p for _, p in kept] == pytest.approx([0.6, 0.2, 0.1, 0.1])
    # a top and trousers found, no dress: the two garments weigh by the detector, the top split 2:1
    weighed = dict(weigh_by_presence(guess, {"t-shirt": 0.9, "shirt": 0.9, "pants": 0.8}, great))
    raw = {
        "dress": PRESENCE_FLOOR * 0.6,
        "t-shirt": (2 / 3) * (PRESENCE_FLOOR * 0.3 + 0.9),
        "shirt": (1 / 3) * (PRESENCE_FLOOR * 0.3 + 0.9),
        "pants": PRESENCE_FLOOR * 0.1 + 0.8,
    }
    assert weighed == pytest.approx({c: w / sum(raw.values()) for c, w in raw.items()})
    assert max(weighed, key=weighed.get) == "pants"  # the likeliest garment, however the model saw the photo


def test_auto_takes_a_garment_the_detector_finds_and_decodes_its_attributes_guided_by_it(tmp_path):
    from appearance.model import AppearanceCoder

    coder = AppearanceCoder.load(fake_models(tmp_path))
    describer = Describer(predictor=FakePredictor(), detector=FakeDetector(present={"bag": 0.95}), coder=coder)
    (d,) = describer.describe([_image()])  # the model's guess: one of FakePredictor.AUTO at 0.9, a bag at 0.05
    assert d.category == "bag" and d.categories[0][0] == "bag"
    assert describer.predictor.calls[-2:] == [[None], ["bag"]]  # auto, then guided by the detector's garment
    assert describer.detector.calls[-1] == ["bag"] and d.attributes["category"][0] == "bag"


def test_a_rectangle_without_a_category_asks_the_detector_what_lies_in_it(tmp_path):
    from appearance.model import AppearanceCoder

    detector = FakeDetector(present={"bag": 0.95})
    asked = []
    presence = detector.presence
    detector.presence = lambda raw, within=None: asked.append(within) or presence(raw, within)
    describer = Describer(
        predictor=FakePredictor(), detector=detector, coder=AppearanceCoder.load(fake_models(tmp_path))
    )
    (d,) = describer.describe([_image()], boxes=[(40, 24, 120, 108)])
    assert asked == [(40, 24, 120, 108)] and d.category == "bag" and d.roi == (40, 24, 120, 108)
    assert detector.calls[-1] == []  # the rectangle is the ROI: no box is chosen


def test_one_photo_twice_in_a_batch_is_detected_once(describer, monkeypatch):
    seen = []
    raw = describer.detector.raw
    monkeypatch.setattr(describer.detector, "raw", lambda images: seen.append(len(images)) or raw(images))
    im = _image()
    a, b = describer.describe([im, im], guides=["pants", "dress"])
    assert seen == [1] and (a.category, b.category) == ("pants", "dress")
    describer.describe([im], guides=["shirt"])  # another call: nothing is remembered between calls
    assert seen == [1, 1]


def test_auto_describes_its_other_likely_categories_in_the_same_call(tmp_path):
    from appearance.model import AppearanceCoder

    class Hesitant(FakePredictor):  # a top or trousers, the model cannot tell
        def predict(self, images, guides=None, *, beam=1, features=None):
            out = super().predict(images, guides, beam=beam)
            if guides is None or guides[0] is None:
                out = [type(p)(p.category, p.attributes, [("t-shirt", 0.5), ("pants", 0.45)]) for p in out]
            return out

    describer = Describer(
        predictor=Hesitant(),
        detector=FakeDetector(),
        coder=AppearanceCoder.load(fake_models(tmp_path)),
    )
    seen = []
    raw = describer.detector.raw
    describer.detector.raw = lambda images: seen.append(len(images)) or raw(images)
    descs, hedge = describer.describe_hedged(_image())
    assert seen == [1]  # one detector pass for every category searched
    assert [d.category for d in descs] == [c for c, _p in hedge] and len(descs) >= 2

    encoded = []
    encode = describer.coder.encode
    describer.coder.encode = lambda crops, **kw: encoded.append(len(crops)) or encode(crops, **kw)
    drawn, hedge = describer.describe_hedged(_image(), box=(40, 24, 120, 108))  # no category named: it hedges
    assert len(drawn) == len(hedge) >= 2 and encoded == [1]  # one crop, one appearance pass
    assert all(d.code.tobytes() == drawn[0].code.tobytes() and d.roi == (40, 24, 120, 108) for d in drawn)


def test_box_overrides_the_detector_and_is_clamped(describer):
    calls = len(describer.detector.calls)
    (d,) = describer.describe([_image()], guides=["dress"], boxes=[(-5.2, 10.5, 80.4, 500)])
    assert d.roi == (0, 10, 81, 120)
    assert len(describer.detector.calls) == calls  # no detector call when every image has a box
    with pytest.raises(ValueError, match="inverted"):
        describer.describe([_image()], boxes=[(50, 50, 10, 60)])


def test_a_drawn_box_is_what_the_attribute_model_reads(describer):
    seen = []
    predict = describer.predictor.predict

    def spy(images, guides=None, **kw):
        seen.extend(im.size for im in images)
        return predict(images, guides, **kw)

    describer.predictor.predict = spy
    try:
        (d,) = describer.describe([_image()], boxes=[(40, 24, 120, 108)])
    finally:
        del describer.predictor.predict
    assert seen == [(80, 84)]  # the crop, not the 160x120 photo: auto mode reads the shopper's garment
    assert d.roi == (40, 24, 120, 108) and d.category in FakePredictor.AUTO


def test_no_detection_falls_back_to_the_whole_image(describer):
    (d,) = describer.describe([_image(size=(90, 70))], guides=["hat"])
    assert d.fallback and d.roi == (0, 0, 90, 70)


def test_batched_equals_single_and_mixed_batches_keep_order(describer):
    images = [_image(), _image((35, 70, 190)), _image((40, 150, 60), size=(100, 140))]
    guides = ["t-shirt", None, "hat"]
    boxes = [None, (10, 10, 90, 90), None]
    batch = describer.describe(images, guides, boxes)
    for im, g, b, d in zip(images, guides, boxes, batch):
        (single,) = describer.describe([im], [g], [b])
        assert single.category == d.category and single.roi == d.roi and single.fallback == d.fallback
        np.testing.assert_array_equal(single.code, d.code)
        np.testing.assert_array_equal(single.colour, d.colour)
    assert not np.array_equal(batch[0].colour, batch[1].colour)


def test_bad_guides_and_lengths_are_named(describer):
    with pytest.raises(ValueError, match="jumpsuitx"):
        describer.describe([_image()], guides=["jumpsuitx"])
    with pytest.raises(ValueError, match="1 images but 2 guides"):
        describer.describe([_image()], guides=[None, None])
    assert describer.describe([]) == []


def test_load_names_the_missing_model_and_its_command(tmp_path):
    from foundation.modelfiles import ModelError

    with pytest.raises(ModelError, match="appearance.pt: train it with `fashion-search train appearance`"):
        Describer.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no models directory"):
        Describer.load(tmp_path / "nothing")


@pytest.fixture(scope="module")
def real_predictor(synth_dump, tmp_path_factory):
    """The real attribute model, one short epoch on the synthetic catalogue (its quality is not the point)."""
    import json

    from attributes.predict import AttributePredictor
    from attributes.train import AttributeTrainConfig, train_attributes

    models = tmp_path_factory.mktemp("attr_models")
    small = models / "small.jsonl"  # 32 products: enough to load and decode, cheap to train
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:32]]
    small.write_text("".join(json.dumps(r | {"image": str(synth_dump.parent / r["image"])}) + "\n" for r in rows))
    cfg = AttributeTrainConfig.demo(epochs=1, image_size=32, batch_size=32, max_minutes=None, device="cpu")
    train_attributes(small, models, config=cfg, progress=False)
    return AttributePredictor.load(models)


def test_describe_with_the_real_attribute_model(real_predictor, describer, synth_dump):
    from foundation.schema import default_schema

    schema = default_schema()
    real = Describer(predictor=real_predictor, detector=FakeDetector(), coder=describer.coder)
    images = [Image.open(p).convert("RGB") for p in sorted((synth_dump.parent / "images").glob("*.jpg"))[:3]]
    guided, auto = real.describe(images[:2], guides=["skirt", None])
    assert guided.category == "skirt" and guided.categories == [("skirt", 1.0)]
    assert guided.attributes["category"][0] == "skirt"
    assert guided.attributes["great_category"][0] == schema.great_category("skirt")
    groups = [g.name for g in schema.groups]
    assert list(guided.attributes) == [g for g in groups if g in guided.attributes]  # schema order
    assert auto.category in schema.categories and auto.attributes["category"][0] == auto.category
    ps = [p for _c, p in auto.categories]
    assert ps == sorted(ps, reverse=True) and all(c in schema.categories for c, _p in auto.categories)
    (again,) = real.describe(images[1:2])
    assert again.category == auto.category
    assert {g: v for g, (v, _p) in again.attributes.items()} == {g: v for g, (v, _p) in auto.attributes.items()}
