"""Detector: model, guided selection, training step, checkpoint round trip, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detector.model import DetectorConfig, build_detector, class_names
from detector.predict import ROI, GarmentDetector, select
from detector.train import DetectorTrainConfig, train_detector

TINY = DetectorConfig(min_size=64, max_size=96)


def test_select_guided_keeps_only_the_guide():
    rois = [ROI((0, 0, 10, 10), "pants", 0.9), ROI((5, 5, 20, 20), "shoes", 0.8), ROI((1, 1, 9, 9), "shoes", 0.95)]
    det = select(rois, "shoes", (40, 30), 0.3)
    assert [r.category for r in det.rois] == ["shoes", "shoes"]
    assert det.roi.score == 0.95 and not det.fallback and det.box == (1, 1, 9, 9)
    free = select(rois, None, (40, 30), 0.3)
    assert [r.score for r in free.rois] == [0.95, 0.9, 0.8]


def test_fallback_is_flagged_with_the_whole_image():
    det = select([ROI((0, 0, 10, 10), "pants", 0.9), ROI((0, 0, 5, 5), "hat", 0.1)], "hat", (40, 30), 0.3)
    assert det.fallback and det.roi is None and det.rois == []
    assert det.box == (0.0, 0.0, 40.0, 30.0)


def test_no_garment_gives_zero_box_loss():
    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names()))
    model.train()
    losses = model([torch.rand(3, 64, 64)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0
    assert losses["loss_classifier"].item() > 0.0


def test_bad_config_and_guide_are_named():
    with pytest.raises(ValueError, match="resnet9"):
        DetectorConfig(backbone="resnet9")
    detector = GarmentDetector.from_model(build_detector(TINY, num_classes=len(class_names())))
    with pytest.raises(ValueError, match="scarfs"):
        detector.detect([Image.new("RGB", (32, 32))], ["scarfs"])


@pytest.fixture(scope="session")
def trained(synth_dump, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    cfg = DetectorTrainConfig(
        model=TINY, epochs=1, batch_size=8, warmup_steps=2, workers=0, max_minutes=0.3, eval_limit=8
    )
    result = train_detector(synth_dump, out, val_dump=synth_dump, config=cfg, progress=False)
    return out, result


def test_training_step_and_checkpoint_round_trip(trained, synth_dump):
    out, result = trained
    assert result["steps"] >= 1 and np.isfinite(result["final_loss"])
    assert set(result["val"]["guided"]) == {f"map@{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    detector = GarmentDetector.load(out, score_threshold=0.0)
    from detector.train import LAST
    from foundation.modelfiles import load_model

    saved = load_model(out, "detector")["state_dicts"]["model"]
    for k, v in detector.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    image = Image.open(next(iter((synth_dump.parent / "images").glob("*.jpg")))).convert("RGB")
    guided = detector.detect([image, image], ["pants", "hat"])
    assert all(r.category == "pants" for r in guided[0].rois)
    assert all(r.category == "hat" for r in guided[1].rois)
    assert load_model(out, LAST)["extra"]["step"] == result["steps"]


def test_resume_refuses_another_model_config(trained, synth_dump):
    out, _ = trained
    cfg = DetectorTrainConfig(model=DetectorConfig(min_size=80, max_size=96), epochs=1, workers=0)
    with pytest.raises(ValueError, match="cannot resume"):
        train_detector(synth_dump, out, config=cfg, progress=False, resume=True)


def test_imagenet_weights_unavailable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache, no network here
    import torch.hub

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match="ImageNet weights"):
        build_detector(DetectorConfig(pretrained="imagenet"), num_classes=3)
