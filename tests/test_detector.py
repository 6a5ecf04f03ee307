"""Detector: model, guided selection, training step, checkpoint round trip, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detector.model import DetectorConfig, build_detector, class_names
from detector.predict import ROI, GarmentDetector, load, select
from detector.train import DetectorTrainConfig, train_detector
from foundation.modelfiles import ModelError, load_model, save_model

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


@pytest.mark.slow
def test_training_step_and_checkpoint_round_trip(trained, synth_dump):
    out, result = trained
    assert result["steps"] >= 1 and np.isfinite(result["final_loss"])
    assert set(result["val"]["guided"]) == {f"map@{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9)}
    detector = GarmentDetector.load(out, score_threshold=0.0)
    from detector.train import LAST

    saved = load_model(out, "detector")["state_dicts"]["model"]
    for k, v in detector.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    image = Image.open(next(iter((synth_dump.parent / "images").glob("*.jpg")))).convert("RGB")
    guided = detector.detect([image, image], ["pants", "hat"])
    assert all(r.category == "pants" for r in guided[0].rois)
    assert all(r.category == "hat" for r in guided[1].rois)
    assert load_model(out, LAST)["extra"]["step"] == result["steps"]


@pytest.mark.slow
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


def test_load_gives_the_model_and_the_preprocessing_saved_with_it(tmp_path):
    import dataclasses

    from foundation.schema import Schema, default_schema

    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names())).eval()
    cfg = DetectorTrainConfig(model=TINY)
    # the preprocessing as detectors saved it before it named its resize
    prep = {"input": "RGB float [0, 1]", "min_size": 64, "max_size": 96}
    save_model(
        tmp_path, "detector", state_dicts={"model": model.state_dict()}, config=cfg.to_dict(), preprocessing=prep
    )
    loaded, preprocess = load(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    x = preprocess(image)
    assert x.shape == (3, 30, 50) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1))
    assert not loaded.training and dataclasses.asdict(TINY)["min_size"] == loaded.transform.min_size[0]
    with torch.inference_mode():
        ours, theirs = loaded([x]), model([x])
    torch.testing.assert_close(ours[0]["scores"], theirs[0]["scores"])
    raw = default_schema().to_dict()
    raw["groups"][3]["values"] = raw["groups"][3]["values"][:-1]
    with pytest.raises(ModelError, match="trained on attribute schema"):
        load(tmp_path, schema=Schema(raw, source="edited.toml"))


def test_presets_are_typed_and_an_unknown_one_is_named():
    from detector.train import PRESETS

    assert set(PRESETS) == {"demo", "default"} and DetectorTrainConfig.demo() == PRESETS["demo"]
    assert DetectorTrainConfig.preset("default", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown detector preset 'huge'; choose from default, demo"):
        DetectorTrainConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        DetectorTrainConfig(device="gpu")


def small_dump(dump, out, n: int):
    """The first ``n`` products of ``dump``, their images referenced by absolute path."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in dump.read_text().splitlines()[:n]]
    for row in rows:
        row["image"] = str((dump.parent / row["image"]).resolve())
    (out / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / "products.jsonl"


@pytest.mark.slow
def test_training_stopped_by_its_time_budget_resumes_to_the_uninterrupted_weights(synth_dump, tmp_path):
    from dataclasses import replace

    dump = small_dump(synth_dump, tmp_path / "data", 12)  # 2 batches an epoch
    cfg = DetectorTrainConfig(model=TINY, epochs=2, batch_size=6, warmup_steps=1, workers=0, max_minutes=None)
    whole = train_detector(dump, tmp_path / "whole", config=cfg, progress=False)
    first = train_detector(dump, tmp_path / "parts", config=replace(cfg, max_minutes=1e-9), progress=False)
    assert first["stopped_by_time"] and first["steps"] == 1  # stopped after its first step, mid-epoch
    resumed = train_detector(dump, tmp_path / "parts", config=cfg, progress=False, resume=True)
    assert whole["steps"] == resumed["steps"] == 4 and resumed["stopped"] == "finished"
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    ours, theirs = (load_model(d, "detector")["state_dicts"]["model"] for d in (tmp_path / "parts", tmp_path / "whole"))
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-5, msg=key)


def test_resume_from_a_one_step_checkpoint_names_the_settings_that_differ(synth_dump, tmp_path):
    from dataclasses import replace

    dump = small_dump(synth_dump, tmp_path / "data", 4)
    cfg = DetectorTrainConfig(model=TINY, epochs=1, batch_size=4, warmup_steps=1, workers=0, max_minutes=1e-9)
    first = train_detector(dump, tmp_path, config=cfg, progress=False)
    assert first["steps"] == 1 and load_model(tmp_path, "detector-last")["extra"]["step"] == 1
    other = replace(cfg, model=DetectorConfig(min_size=80, max_size=96), lr=0.01)
    with pytest.raises(ValueError, match=r"cannot resume .*loop.lr: 0.001 there, 0.01 here; task.model.min_size: 64"):
        train_detector(dump, tmp_path, config=other, progress=False, resume=True)
