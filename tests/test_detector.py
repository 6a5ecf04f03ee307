"""Detector: backbones, model, guided selection, training step, checkpoint round trip, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detector.model import (
    BACKBONES,
    DetectorConfig,
    build_detector,
    class_groups,
    class_names,
    fold_batch_norm,
    great_categories,
)
from detector.predict import ROI, GarmentDetector, Raw, guided_rois, load, select
from detector.train import DetectorTrainConfig, train_detector
from foundation.modelfiles import ModelError, ModelFile, load_model, save_model
from foundation.schema import default_schema
from foundation.weights import WeightsMissing, is_available

TINY = DetectorConfig(min_size=64, max_size=96, pretrained="none")
NEEDS_IMAGENET = pytest.mark.skipif(
    not is_available("mobilenet_v2"), reason="ImageNet MobileNetV2 weights not installed"
)


def _one_garment():
    return [{"boxes": torch.tensor([[8.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([3])}]


@pytest.mark.parametrize(("backbone", "stride16"), [(b, None) for b in BACKBONES] + [("mobilenet_v2", False)], ids=str)
def test_each_backbone_builds_and_takes_a_training_step(backbone, stride16):
    torch.manual_seed(0)
    cfg = DetectorConfig(backbone=backbone, pretrained="none", min_size=64, max_size=64, stride16=stride16)
    model = build_detector(cfg, num_classes=len(class_names()))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    losses = model([torch.rand(3, 64, 64)], _one_garment())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    optimizer = torch.optim.SGD(params, lr=0.01)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, params))
    with torch.inference_mode():
        out = model.eval()([torch.rand(3, 64, 64)])[0]
    assert out["boxes"].shape[1] == 4 and (out["labels"] >= 1).all()


def test_mobilenet_v2_taps_a_stride_16_level_by_default():
    model = build_detector(TINY, num_classes=len(class_names())).eval()
    with torch.inference_mode():
        features = model.backbone(torch.rand(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {"0": (4, 6), "1": (2, 3), "pool": (1, 2)}
    coarse = build_detector(DetectorConfig(min_size=64, max_size=96, pretrained="none", stride16=False), num_classes=3)
    with torch.inference_mode():
        assert coarse.eval().backbone(torch.rand(1, 3, 64, 96))["0"].shape[-2:] == (2, 3)  # detector_backbone's taps
    with pytest.raises(ValueError, match="stride16 is a choice of the mobilenet_v2 backbone, not of resnet18"):
        DetectorConfig(backbone="resnet18", stride16=True)


def test_unknown_choices_are_named():
    with pytest.raises(ValueError, match=r"unknown detector backbone 'resnet9'; choose one of mobilenet_v2, resnet18"):
        DetectorConfig(backbone="resnet9")
    with pytest.raises(ValueError, match=r"unknown pretrained value 'imagenet21k'; choose one of auto, imagenet, none"):
        DetectorConfig(pretrained="imagenet21k")
    with pytest.raises(ValueError, match="unknown guidance 'box'"):
        GarmentDetector(build_detector(TINY, num_classes=len(class_names())), guidance="box")
    from cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "detector", "--data", "x.jsonl", "--out", "o", "--backbone", "googlenet"])
    assert DetectorConfig(pretrained=None).pretrained == "none"  # as checkpoints saved it before


@NEEDS_IMAGENET
def test_imagenet_backbone_starts_from_torchvisions_weights():
    import torchvision.models as tvm

    from foundation.weights import imagenet_weights

    model = build_detector(DetectorConfig(pretrained="imagenet"), num_classes=len(class_names()))
    reference = tvm.mobilenet_v2(weights=imagenet_weights("mobilenet_v2"))
    torch.testing.assert_close(model.backbone.body["0"][0].weight, reference.features[0][0].weight, rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.body["0"][1].running_var, reference.features[0][1].running_var)
    assert DetectorConfig().resolved().pretrained == "imagenet"  # the default where the weights are installed
    assert not model.backbone.body["0"][0].weight.requires_grad  # the first stages stay as trained on ImageNet


@NEEDS_IMAGENET
def test_a_pretrained_detector_loads_without_the_imagenet_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = DetectorTrainConfig(model=DetectorConfig(min_size=64, max_size=96, pretrained="imagenet"))
    model = build_detector(cfg.model, num_classes=len(class_names())).eval()
    prep = {"input": "RGB float [0, 1]", "resize": "none"}
    save_model(
        tmp_path,
        "detector",
        ModelFile(state_dicts={"model": model.state_dict()}, config=cfg.to_dict(), preprocessing=prep),
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no weights file any more
    loaded, _ = load(tmp_path)
    x = torch.rand(3, 70, 90)
    with torch.inference_mode():
        ours, theirs = loaded([x])[0], model([x])[0]
        features = model.backbone(x[None])
        folded = fold_batch_norm(loaded).backbone(x[None])  # as GarmentDetector.load runs it
    torch.testing.assert_close(ours["scores"], theirs["scores"])
    for key, value in features.items():
        torch.testing.assert_close(folded[key], value, rtol=1e-4, atol=1e-4)


def test_missing_imagenet_weights_are_a_clear_error_never_a_silent_fallback(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    import torch.hub

    def no_network(*a, **k):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    for backbone in ("mobilenet_v2", "mobilenet_v3_large_fpn"):
        with pytest.raises(WeightsMissing, match=r"ImageNet weights for .* are not installed.*--pretrained none"):
            build_detector(DetectorConfig(backbone=backbone, pretrained="imagenet"), num_classes=3)
    with caplog.at_level("WARNING"):
        assert DetectorConfig(pretrained="auto").resolved().pretrained == "none"
    assert "not installed: it trains from scratch" in caplog.text


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


def test_great_category_detections_add_up_their_categories():
    """The box head's great-category detection scores the sum of its categories' probabilities."""
    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names())).eval()
    heads, classes, greats = model.roi_heads, class_names(), great_categories()
    logits = torch.full((1, len(classes)), -20.0)
    for name, p in (("blouse", 0.35), ("shirt", 0.3), ("pants", 0.2), ("__background__", 0.15)):
        logits[0, classes.index(name)] = float(np.log(p))
    regression = torch.zeros(1, 4 * len(classes))
    regression[0, 4 * classes.index("shirt") : 4 * classes.index("shirt") + 2] = 0.5  # shirt's box moves right/down
    boxes, scores, labels = heads.postprocess_detections(
        logits, regression, [torch.tensor([[10.0, 10.0, 50.0, 70.0]])], [(100, 100)]
    )
    got = {int(lab): (float(s), b.tolist()) for b, s, lab in zip(boxes[0], scores[0], labels[0])}
    tops = len(classes) + greats.index("tops")
    assert got[tops][0] == pytest.approx(0.65, abs=1e-3) and got[len(classes) + greats.index("bottoms")][
        0
    ] == pytest.approx(0.2, abs=1e-3)
    assert got[tops][1] == pytest.approx([10.0, 10.0, 50.0, 70.0])  # blouse, the likeliest top, places it
    assert got[classes.index("blouse")][0] == pytest.approx(0.35, abs=1e-3)  # per-category detections as before
    assert class_groups()[classes.index("jeans")] == greats.index("bottoms") and class_groups()[0] == -1


def test_ranked_guidance_keeps_the_likeliest_box_of_the_guide_and_discounts_the_others():
    """A T-shirt beside a shirt: each guide finds its own garment; a lone top answers any top's guide."""
    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names())).eval()
    classes, n_greats = class_names(), len(great_categories())
    logits = torch.full((2, len(classes)), -20.0)
    for row, (tee, shirt) in enumerate(((0.7, 0.2), (0.2, 0.7))):
        logits[row, classes.index("t-shirt")], logits[row, classes.index("shirt")] = np.log(tee), np.log(shirt)
        logits[row, 0] = np.log(0.1)
    proposals = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]])]
    regression = torch.zeros(2, 4 * len(classes))
    boxes, scores, labels = model.roi_heads.postprocess_detections(logits, regression, proposals, [(100, 100)])

    def ranked(category):
        label = len(classes) + n_greats + classes.index(category) - 1
        return sorted(
            (round(float(s), 3), b.tolist()) for b, s, lab in zip(boxes[0], scores[0], labels[0]) if lab == label
        )

    assert ranked("t-shirt") == [
        (pytest.approx(0.257, abs=1e-3), [50.0, 50.0, 90.0, 90.0]),
        (0.9, [0.0, 0.0, 40.0, 40.0]),
    ]
    assert ranked("shirt") == [
        (pytest.approx(0.257, abs=1e-3), [0.0, 0.0, 40.0, 40.0]),
        (0.9, [50.0, 50.0, 90.0, 90.0]),
    ]
    assert ranked("blouse")[-1][0] == pytest.approx(0.9, abs=1e-3)  # no blouse seen: the tops keep their probability


def test_guidance_by_great_category_names_the_box_after_the_guide():
    raw = Raw(
        rois=[ROI((0, 0, 10, 10), "shirt", 0.4), ROI((0, 20, 10, 40), "pants", 0.8)],
        great=[ROI((1, 1, 11, 11), "tops", 0.7), ROI((0, 20, 10, 40), "bottoms", 0.9)],
        ranked=[ROI((1, 1, 11, 11), "blouse", 0.7), ROI((1, 1, 11, 11), "shirt", 0.7)],
    )
    schema = default_schema()
    assert guided_rois(raw, "blouse", "ranked", schema) == [ROI((1, 1, 11, 11), "blouse", 0.7)]
    assert guided_rois(raw, "blouse", "great_category", schema) == [ROI((1, 1, 11, 11), "blouse", 0.7)]
    assert guided_rois(raw, "blouse", "category", schema) == []
    assert guided_rois(raw, "shirt", "category", schema) == [ROI((0, 0, 10, 10), "shirt", 0.4)]
    det = select(guided_rois(raw, "hat", "great_category", schema), "hat", (40, 40), 0.3)
    assert det.fallback and det.box == (0.0, 0.0, 40.0, 40.0)


def test_fold_batch_norm_keeps_what_the_model_computes():
    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names()))
    model.train()
    for _ in range(2):  # running statistics away from their initial values
        model([torch.rand(3, 64, 80)], _one_garment())
    model.eval()
    x = torch.rand(3, 64, 80)
    with torch.inference_mode():
        before = model.backbone(x[None])
        fold_batch_norm(model)
        after = model.backbone(x[None])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(model.train())


def test_bad_config_and_guide_are_named():
    with pytest.raises(ValueError, match="resnet9"):
        DetectorConfig(backbone="resnet9")
    detector = GarmentDetector.from_model(build_detector(TINY, num_classes=len(class_names())))
    with pytest.raises(ValueError, match="scarfs"):
        detector.detect([Image.new("RGB", (32, 32))], ["scarfs"])


def test_presence_is_each_categorys_best_guided_score_and_choose_is_detect():
    raw = Raw(
        rois=[ROI((0, 0, 10, 10), "t-shirt", 0.6)],
        great=[ROI((0, 0, 10, 10), "tops", 0.8)],
        ranked=[
            ROI((0, 0, 10, 10), "t-shirt", 0.8),
            ROI((5, 5, 20, 20), "shirt", 0.5),
            ROI((0, 0, 9, 9), "shirt", 0.2),
        ],
    )
    detector = GarmentDetector.from_model(build_detector(TINY, num_classes=len(class_names())), score_threshold=0.3)
    presence = detector.presence(raw)
    assert set(presence) == set(class_names()[1:])
    assert (presence["t-shirt"], presence["shirt"], presence["pants"]) == (0.8, 0.5, 0.0)
    inside = detector.presence(raw, within=(0, 0, 10, 11))  # only boxes overlapping it at IoU >= 0.5
    assert (inside["t-shirt"], inside["shirt"]) == (0.8, 0.2)
    assert detector.choose(raw, "shirt", (40, 40)).roi == ROI((5, 5, 20, 20), "shirt", 0.5)
    assert detector.choose(raw, "pants", (40, 40)).fallback
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    (raw,) = detector.raw([image])
    assert detector.choose(raw, "pants", image.size) == detector.detect([image], ["pants"])[0]


def test_garments_are_one_box_each_whatever_class_found_them():
    raw = Raw(
        rois=[ROI((0, 0, 10, 20), "shirt", 0.7), ROI((30, 30, 60, 80), "jeans", 0.6), ROI((0, 0, 50, 50), "bag", 0.1)],
        great=[ROI((1, 0, 10, 21), "tops", 0.9), ROI((31, 30, 60, 79), "bottoms", 0.5)],
    )
    detector = GarmentDetector.from_model(build_detector(TINY, num_classes=len(class_names())), score_threshold=0.3)
    garments = detector.garments(raw)
    # the top found by two heads is one garment, at its best box; the bag is under the threshold
    assert garments == [ROI((1, 0, 10, 21), "tops", 0.9), ROI((30, 30, 60, 80), "bottoms", 0.6)]
    assert detector.garments(Raw(rois=[], great=[])) == []


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
    garments = result["val"]["garments"]  # what auto offers, scored as one class
    assert set(garments) == {f"map@{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9)} | {"recall@0.5"}
    assert 0.0 <= garments["recall@0.5"] <= 1.0
    detector = GarmentDetector.load(out, score_threshold=0.0)
    from detector.train import LAST

    saved = load_model(out, "detector")["state_dicts"]["model"]
    for k, v in load(out)[0].state_dict().items():  # unfolded: GarmentDetector.load folds batch norm
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


def test_load_gives_the_model_and_the_preprocessing_saved_with_it(tmp_path):
    import dataclasses

    from foundation.schema import Schema, default_schema

    torch.manual_seed(0)
    model = build_detector(TINY, num_classes=len(class_names())).eval()
    cfg = DetectorTrainConfig(model=TINY)
    # the preprocessing as detectors saved it before it named its resize
    prep = {"input": "RGB float [0, 1]", "min_size": 64, "max_size": 96}
    save_model(
        tmp_path,
        "detector",
        ModelFile(state_dicts={"model": model.state_dict()}, config=cfg.to_dict(), preprocessing=prep),
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
    raw["colours"].pop(raw["groups"][3]["values"][-1], None)  # its swatch goes with the value
    raw["groups"][3]["values"] = raw["groups"][3]["values"][:-1]
    with pytest.raises(ModelError, match="trained on attribute schema"):
        load(tmp_path, schema=Schema(raw, source="edited.toml"))


def test_roi_pooling_samples_as_training_set_it_and_serving_samples_once_a_bin(tmp_path):
    from detector.predict import ROI_SAMPLING_RATIO, set_roi_sampling

    assert build_detector(TINY, num_classes=len(class_names())).roi_heads.box_roi_pool.sampling_ratio == 2
    once = DetectorConfig(min_size=64, max_size=96, pretrained="none", roi_sampling_ratio=1)
    model = build_detector(once, num_classes=len(class_names())).eval()
    assert model.roi_heads.box_roi_pool.sampling_ratio == 1
    with pytest.raises(ValueError, match="roi_sampling_ratio must be at least 1, got 0"):
        DetectorConfig(roi_sampling_ratio=0)
    trained = build_detector(TINY, num_classes=len(class_names())).eval()
    prep = {"input": "RGB float [0, 1]", "resize": "none", "min_size": 64, "max_size": 96}
    config = DetectorTrainConfig(model=TINY).to_dict()
    save_model(tmp_path, "detector", ModelFile({"model": trained.state_dict()}, config, prep))
    assert GarmentDetector.load(tmp_path).model.roi_heads.box_roi_pool.sampling_ratio == ROI_SAMPLING_RATIO == 1
    assert load(tmp_path)[0].roi_heads.box_roi_pool.sampling_ratio == 2  # the model as trained
    with pytest.raises(ValueError, match="roi_sampling_ratio must be at least 1, got 0"):
        set_roi_sampling(model, 0)


def test_a_checkpoint_of_the_earlier_detector_still_loads(tmp_path):
    """Detectors saved before the backbone choice: torchvision's MobileNetV3 builder, ``pretrained`` None."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    old = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=len(class_names()), min_size=64, max_size=96
    ).eval()
    model = {
        "backbone": "mobilenet_v3_large_fpn",
        "min_size": 64,
        "max_size": 96,
        "pretrained": None,
        "detections_per_image": 50,
        "box_score_thresh": 0.01,
        "box_batch_size_per_image": 64,
        "rpn_post_nms_top_n_train": 300,
    }
    config = {**DetectorTrainConfig(model=TINY).to_dict(), "model": model}
    prep = {"input": "RGB float [0, 1]", "resize": "none", "min_size": 64, "max_size": 96}
    save_model(tmp_path, "detector", ModelFile({"model": old.state_dict()}, config, prep))
    detector = GarmentDetector.load(tmp_path, score_threshold=0.0)
    (det,) = detector.detect([Image.new("RGB", (80, 60), (200, 30, 30))], ["pants"])
    assert all(r.category == "pants" for r in det.rois)


def test_presets_are_typed_and_an_unknown_one_is_named():
    from detector.train import PRESETS

    assert set(PRESETS) == {"demo", "default"} and DetectorTrainConfig.demo() == PRESETS["demo"]
    assert DetectorTrainConfig.preset("default", epochs=3).epochs == 3
    # what a checkpoint records beside the loop's settings: another set refuses the checkpoints there are
    assert set(DetectorTrainConfig().learning_settings()) == {"model", "batch_size"}
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
    cfg = DetectorTrainConfig(model=TINY, epochs=1, batch_size=4, lr=1e-3, warmup_steps=1, workers=0, max_minutes=1e-9)
    first = train_detector(dump, tmp_path, config=cfg, progress=False)
    assert first["steps"] == 1 and load_model(tmp_path, "detector-last")["extra"]["step"] == 1
    other = replace(cfg, model=DetectorConfig(min_size=80, max_size=96), lr=0.01)
    with pytest.raises(ValueError, match=r"cannot resume .*loop.lr: 0.001 there, 0.01 here; task.model.min_size: 64"):
        train_detector(dump, tmp_path, config=other, progress=False, resume=True)
