"""The trunk stages the attribute model and the appearance network share, run once for a crop both
read: cutting a trunk, finding the shared stages, and the same features, codes and descriptions
as two separate passes (small, randomly initialised MobileNetV2s at 48 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from appearance.model import AppearanceCoder, CodeNetwork
from attributes.model import AttributeModelConfig, build_attribute_model
from attributes.predict import AttributePredictor
from foundation.backbones import build_trunk, frozen_modules, split_body
from foundation.modelfiles import Preprocess
from foundation.schema import default_schema
from indexer.describe import Describer
from indexer.garments import describe_garments
from indexer.stem import SharedStem
from tests.indexer_fakes import FakeDetector, FakeROI

SCHEMA = default_schema()
PREP = {"image_size": 48, "resize": "squash", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _photos(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((80, 60), Image.Resampling.BICUBIC))
    return out


def _readers(shared_stages: int, *, image_size: int = 48) -> tuple[AttributePredictor, AppearanceCoder]:
    """An attribute predictor and an appearance coder whose first ``shared_stages`` stages hold the
    same weights (as two models fine-tuned from one ImageNet trunk with those stages frozen)."""
    torch.manual_seed(0)
    cfg = AttributeModelConfig(backbone="mobilenet_v2", vocab_size=len(SCHEMA.tokens), embed_dim=16, hidden_dim=32)
    model = build_attribute_model(cfg, schema=SCHEMA).eval()
    predictor = AttributePredictor(model, Preprocess.from_saved(PREP), SCHEMA)
    torch.manual_seed(1)
    coder = AppearanceCoder(CodeNetwork("mobilenet_v2", pretrained="none"), image_size=image_size)
    for name in frozen_modules("mobilenet_v2", shared_stages):
        coder.net.net.get_submodule(name).load_state_dict(model.encoder.trunk.body.get_submodule(name).state_dict())
    coder.fit_median(_photos(16, seed=5))
    return predictor, coder


@pytest.mark.parametrize(
    ("name", "stages"), [("mobilenet_v2", 1), ("mobilenet_v2", 3), ("mobilenet_v2", 4), ("resnet18", 2)]
)
def test_a_trunk_cut_after_some_stages_computes_the_whole_trunk(name, stages):
    torch.manual_seed(0)
    body = build_trunk(name, pretrained="none").body.eval()
    prefix, suffix = split_body(body, name, stages)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want, got = body(x), suffix(prefix(x))
    assert list(got) == list(want)
    for tap in want:
        torch.testing.assert_close(got[tap], want[tap], atol=1e-6, rtol=1e-5)
    # the parts hold only their own layers, the body's own (no copy)
    first_after = "features.7" if name == "mobilenet_v2" and stages == 3 else None
    if first_after:
        assert not any(n.startswith(first_after + ".") for n, _ in prefix.named_parameters())
        assert not any(n.startswith("features.0.") for n, _ in suffix.named_parameters())
        assert suffix.get_submodule("features.7.conv.0.0").weight is body.get_submodule("features.7.conv.0.0").weight
    with pytest.raises(ValueError, match="1 to 4 stages"):
        split_body(body, name, 0)


def test_the_shared_stages_are_the_ones_whose_weights_are_equal():
    predictor, coder = _readers(3)
    stem = SharedStem.of(predictor, coder)
    assert stem is not None and stem.stages == 3
    assert SharedStem.of(*_readers(1)).stages == 1
    # another size or normalisation, an untouched network, another kind of reader: nothing shared
    assert SharedStem.of(*_readers(3, image_size=64)) is None
    predictor, _ = _readers(3)
    torch.manual_seed(7)
    assert SharedStem.of(predictor, AppearanceCoder(CodeNetwork("mobilenet_v2"), image_size=48)) is None
    assert SharedStem.of(object(), coder) is None


def test_the_shared_pass_gives_the_features_and_codes_of_two_passes():
    predictor, coder = _readers(3)
    stem = SharedStem.of(predictor, coder)
    crops = _photos(5, seed=3)
    features, codes, seconds = stem.read(predictor, coder, crops)
    torch.testing.assert_close(features, predictor.features(crops), atol=1e-6, rtol=1e-5)
    # a bit flips only where a feature lies within float rounding of its median
    assert np.unpackbits(codes ^ coder.encode(crops), axis=1).sum(1).max() <= 0.01 * coder.dims
    assert seconds > 0


def test_a_rectangle_and_autos_garments_are_described_alike_with_and_without_the_shared_pass(monkeypatch):
    predictor, coder = _readers(3)
    shared = Describer(predictor=predictor, detector=FakeDetector(), coder=coder)
    apart = Describer(predictor=predictor, detector=FakeDetector(), coder=coder)
    apart.stem = None  # two passes
    assert shared.stem is not None
    reads = []
    read = SharedStem.read
    monkeypatch.setattr(SharedStem, "read", lambda self, *a: reads.append(len(a[2])) or read(self, *a))
    photos = _photos(3, seed=9)
    boxes = [(4, 6, 60, 50), (0, 0, 80, 60), (10, 10, 40, 40)]
    for a, b in zip(
        shared.describe(photos, guides=["pants", None, "dress"], boxes=boxes),
        apart.describe(photos, guides=["pants", None, "dress"], boxes=boxes),
    ):
        assert (a.category, a.roi, a.attributes) == (b.category, b.roi, b.attributes)
        assert np.unpackbits(a.code ^ b.code).sum() <= 0.01 * coder.dims
        assert set(a.timings_ms) == set(b.timings_ms)
    assert reads == [3]  # the three rectangles, in one shared pass
    for d in (shared, apart):
        d.detector.found = [
            FakeROI((5.0, 5.0, 40.0, 50.0), "tops", 0.9),
            FakeROI((30.0, 20.0, 78.0, 58.0), "bottoms", 0.8),
        ]
    looks_shared, looks_apart = describe_garments(shared, photos[0]), describe_garments(apart, photos[0])
    assert len(looks_shared) == len(looks_apart) == 2
    assert reads == [3, 2]  # auto's two garments, in one shared pass
    for (mine, _), (theirs, _) in zip(looks_shared, looks_apart):
        for a, b in zip(mine, theirs):
            assert (a.category, a.roi, a.attributes) == (b.category, b.roi, b.attributes)
            assert np.unpackbits(a.code ^ b.code).sum() <= 0.01 * coder.dims


def _save(models_dir, predictor: AttributePredictor, coder: AppearanceCoder, cfg) -> None:
    from foundation.modelfiles import ModelFile, save_model

    contents = ModelFile(
        state_dicts={"model": predictor.model.state_dict()}, config={"model": cfg.to_dict()}, preprocessing=PREP
    )
    save_model(models_dir, "attributes", contents, schema=SCHEMA)
    coder.save(models_dir, schema=SCHEMA)


@pytest.mark.slow  # exports five graphs (about a minute)
def test_on_onnx_runtime_the_shared_stages_are_graphs_of_their_own_where_the_models_share_them(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from indexer.graphs import export_graphs
    from indexer.stem import GRAPHS

    predictor, coder = _readers(3)
    cfg = AttributeModelConfig(backbone="mobilenet_v2", vocab_size=len(SCHEMA.tokens), embed_dim=16, hidden_dim=32)
    shared, apart = tmp_path / "shared", tmp_path / "apart"
    _save(shared, predictor, coder, cfg)
    done = export_graphs(shared, models=["attributes", "appearance"], schema=SCHEMA)
    assert done["stem"]["exported"] and done["stem"]["graphs"] == [str(g.path(shared)) for g in GRAPHS]
    ours = SharedStem.open(
        shared,
        AttributePredictor.load(shared, schema=SCHEMA, runtime="onnx"),
        AppearanceCoder.load(shared, schema=SCHEMA, runtime="onnx"),
    )
    assert ours is not None
    crops = _photos(4, seed=13)
    features, codes, _ = ours.read(predictor, coder, crops)
    want_features, want_codes, _ = SharedStem.of(predictor, coder).read(predictor, coder, crops)
    torch.testing.assert_close(features, want_features, atol=1e-4, rtol=1e-4)
    assert np.unpackbits(codes ^ want_codes, axis=1).sum(1).max() <= 0.01 * coder.dims
    # models that share no stages: no stem graphs, and the crop readers read apart
    torch.manual_seed(7)
    coder_apart = AppearanceCoder(CodeNetwork("mobilenet_v2"), image_size=48)
    coder_apart.fit_median(_photos(4))
    _save(apart, predictor, coder_apart, cfg)
    assert export_graphs(apart, models=["attributes", "appearance"], schema=SCHEMA)["stem"]["graphs"] == []
    assert SharedStem.open(apart, predictor, coder_apart) is None
