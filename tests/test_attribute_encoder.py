"""The attribute encoder: each backbone, frozen stages, ImageNet weights (present or missing), the CLI's
encoder choice, and old ResNet checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from attributes.model import AttributeModelConfig, Encoder, LSTMAttributeModel, build_attribute_model
from attributes.predict import AttributePredictor, load_sequence_model
from attributes.train import PRESETS, AttributeTrainConfig, sequence_loss
from foundation.backbones import BACKBONES, PRETRAINED, STAGES, default_backbone, default_pretrained, installed
from foundation.modelfiles import ModelError, ModelFile, save_model
from foundation.schema import default_schema
from foundation.weights import WeightsMissing, is_available

SCHEMA = default_schema()
V = len(SCHEMA.tokens)


def test_an_unknown_backbone_or_pretrained_value_lists_the_choices():
    with pytest.raises(
        ValueError, match="unknown backbone 'vgg16': choose one of mobilenet_v2, resnet18, resnet50, googlenet"
    ):
        AttributeModelConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="unknown pretrained value 'yes': choose one of imagenet, none"):
        AttributeTrainConfig(pretrained="yes")
    with pytest.raises(ValueError, match="unknown backbone 'resnet34'"):
        AttributeTrainConfig(backbone="resnet34", pretrained="none", frozen_stages=0)
    with pytest.raises(ValueError, match="frozen_stages must be between 0 and 5, got 6"):
        AttributeModelConfig(pretrained="imagenet", frozen_stages=6)
    with pytest.raises(ValueError, match="frozen_stages=2 needs pretrained='imagenet'.* would never learn"):
        AttributeTrainConfig(pretrained="none", frozen_stages=2)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_backbone_builds_from_scratch_and_trains_a_step(backbone):
    if not installed(backbone):
        pytest.skip(f"{backbone} needs the efficientnet extra")
    torch.manual_seed(0)
    cfg = AttributeModelConfig(backbone=backbone, pretrained="none", vocab_size=V, embed_dim=8, hidden_dim=16)
    model = build_attribute_model(cfg, schema=SCHEMA).train()
    assert model.encoder.trunk.name == backbone and model.encoder.width == model.encoder.trunk.final_channels
    images = torch.randn(2, 3, 64, 64)
    tokens = torch.tensor([SCHEMA.encode(SCHEMA.complete({"colour": "red"}, "skirt"))] * 2)
    assert model.encode(images).shape == (2, model.encoder.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = next(model.encoder.trunk.body.parameters())
    before = first.detach().clone()
    loss = sequence_loss(model(images, tokens[:, :-1]), tokens, label_smoothing=0.1)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(first, before)  # the trunk's first layer learns too
    base = build_attribute_model(dataclasses.replace(cfg, kind="binary"), schema=SCHEMA)
    assert [o.shape for o in base(images)] == [(2, len(g.values) + 1) for g in SCHEMA.groups]


def test_frozen_stages_take_no_gradient_and_keep_their_batch_norm_statistics():
    encoder = Encoder("resnet18", pretrained="none", frozen_stages=2)  # the stride-2 and stride-4 stages
    body = encoder.trunk.body
    frozen = [body.get_submodule(n) for stage in STAGES["resnet18"][:2] for n in stage]
    assert encoder.frozen == ["conv1", "bn1", "layer1"]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    encoder.train()
    assert encoder.training and body.layer2.training and not any(m.training for f in frozen for m in f.modules())
    stats = {n: b.detach().clone() for n, b in body.named_buffers() if n.endswith("running_mean")}
    encoder(torch.randn(2, 3, 64, 64)).sum().backward()
    for n, b in body.named_buffers():
        if n.endswith("running_mean"):
            assert torch.equal(b, stats[n]) == n.startswith(("bn1", "layer1")), n
    assert body.conv1.weight.grad is None and body.get_submodule("layer2.0.conv1").weight.grad is not None
    for name, stages in STAGES.items():  # every stage names modules of its trunk
        if not installed(name):
            continue
        names = {n for n, _ in Encoder(name, pretrained="none").trunk.body.named_modules()}
        assert all(m in names for stage in stages for m in stage), name


@pytest.mark.skipif(not is_available("mobilenet_v2"), reason="torchvision's ImageNet MobileNetV2 file is not installed")
def test_the_imagenet_trunk_holds_torchvisions_weights():
    import torchvision

    cfg = AttributeModelConfig(backbone="mobilenet_v2", pretrained="imagenet", frozen_stages=3, vocab_size=V)
    model = build_attribute_model(cfg, schema=SCHEMA)
    reference = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").state_dict()
    trunk = model.encoder.trunk.state_dict()
    assert torch.equal(trunk["body.features.0.0.weight"], reference["features.0.0.weight"])  # the first conv
    for key, value in trunk.items():
        torch.testing.assert_close(value, reference[key.removeprefix("body.")], rtol=0, atol=0, msg=key)
    # loading a saved model builds a random trunk, then the file's weights replace it
    fresh = build_attribute_model(cfg, schema=SCHEMA, load_pretrained=False)
    assert not torch.equal(
        fresh.encoder.trunk.body.get_submodule("features.0.0").weight, reference["features.0.0.weight"]
    )


def test_missing_imagenet_weights_fail_loudly_and_never_fall_back(monkeypatch, tmp_path, synth_dump, capsys):
    from cli.main import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    for backbone in ("mobilenet_v2", "resnet18"):
        cfg = AttributeModelConfig(backbone=backbone, pretrained="imagenet", vocab_size=V)
        with pytest.raises(
            WeightsMissing, match=f"ImageNet weights for {backbone} are not installed.*--pretrained none"
        ):
            build_attribute_model(cfg, schema=SCHEMA)
    out = tmp_path / "models"
    argv = ["train", "attributes", "--data", str(synth_dump), "--out", str(out), "--pretrained", "imagenet"]
    assert main(argv) == 2
    assert "error: ImageNet weights for mobilenet_v2 are not installed" in capsys.readouterr().err
    assert not out.exists()  # it failed before reading the data or writing anything


def test_the_cli_chooses_the_encoder_as_the_presets_and_the_installed_weights_say(monkeypatch):
    import attributes.train
    import cli.attributes
    from cli.main import main

    assert cli.attributes.BACKBONE_CHOICES == BACKBONES and cli.attributes.PRETRAINED_CHOICES == PRETRAINED
    seen = []
    monkeypatch.setattr(attributes.train, "train_attributes", lambda *a, config, **k: seen.append(config) or {})

    def config(*flags):
        assert main(["train", "attributes", "--data", "d.jsonl", "--out", "m", *flags]) == 0
        return seen.pop()

    default = config()
    assert default == PRESETS["default"]
    assert (default.backbone, default.pretrained) == (default_backbone(), default_pretrained())
    scratch = config("--pretrained", "none")
    assert (scratch.pretrained, scratch.frozen_stages) == ("none", 0)  # a trunk from scratch trains every stage
    resnet = config("--backbone", "resnet18")
    assert resnet.pretrained == default_pretrained("resnet18")
    assert resnet.frozen_stages == (PRESETS["default"].frozen_stages if resnet.pretrained == "imagenet" else 0)
    assert config("--preset", "scratch") == PRESETS["scratch"]
    assert config("--preset", "demo", "--epochs", "2") == dataclasses.replace(PRESETS["demo"], epochs=2)


def _old_checkpoint(tmp_path, depth: int) -> LSTMAttributeModel:
    """A model as saved before the encoder became a backbone choice: a torchvision ResNet under ``encoder.``."""
    import torchvision

    net = torchvision.models.get_model(f"resnet{depth}", weights=None)
    width, net.fc = net.fc.in_features, nn.Identity()
    model = LSTMAttributeModel(AttributeModelConfig(vocab_size=V, embed_dim=16, hidden_dim=32), net, width).eval()
    old_cfg = {"kind": "lstm", "depth": depth, "embed_dim": 16, "hidden_dim": 32, "dropout": 0.2, "vocab_size": V}
    save_model(
        tmp_path,
        "attributes",
        ModelFile(
            state_dicts={"model": model.state_dict()},
            config={"model": {**old_cfg, "pretrained": None}},
            preprocessing={"image_size": 64, "resize": "squash", "mean": [0.5] * 3, "std": [0.25] * 3},
        ),
        schema=SCHEMA,
    )
    return model


def test_old_resnet_checkpoints_still_load_and_others_are_refused_clearly(tmp_path):
    old = _old_checkpoint(tmp_path / "r18", 18)
    loaded, _ = load_sequence_model(tmp_path / "r18")
    assert (loaded.cfg.backbone, loaded.cfg.pretrained, loaded.cfg.frozen_stages) == ("resnet18", "none", 0)
    images = torch.randn(2, 3, 64, 64)
    tokens = torch.tensor([SCHEMA.encode(SCHEMA.complete({}, "hat"))] * 2)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images, tokens), old(images, tokens), rtol=0, atol=1e-6)
    _old_checkpoint(tmp_path / "r34", 34)
    with pytest.raises(ModelError, match="has a ResNet-34 encoder, which is no longer built.*retrain it"):
        AttributePredictor.load(tmp_path / "r34")
