"""The appearance code's instance objective: shopper's views, the soft-code InfoNCE, frozen parts, a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from appearance.instance import (
    InstanceNetwork,
    catalogue_view,
    info_nce,
    instance_recall,
    shopper_view,
    soft_codes,
)
from appearance.model import AppearanceCoder, CodeNetwork
from appearance.train import INSTANCE_RANKING, AppearanceConfig, train_appearance
from foundation.cutout import garment_mask


def _garment(colour=(200, 30, 30), size=(160, 200)) -> Image.Image:
    """A plain garment-shaped blob on a light studio background."""
    im = Image.new("RGB", size, (235, 235, 230))
    arr = np.asarray(im).copy()
    h, w = arr.shape[:2]
    arr[h // 6 : h - h // 8, w // 5 : w - w // 5] = colour
    return Image.fromarray(arr)


def test_a_shopper_view_shows_the_garment_and_is_drawn_from_its_generator():
    image = _garment()
    mask = garment_mask(image)
    assert 0.3 < mask.mean() < 0.8  # GrabCut keeps the blob, not the studio
    views = [shopper_view(image, mask, np.random.default_rng(3), backdrop=_garment((20, 20, 200))) for _ in range(2)]
    assert views[0].mode == "RGB" and min(views[0].size) >= 8
    np.testing.assert_array_equal(np.asarray(views[0]), np.asarray(views[1]))  # same seed, same view
    # framed by the shopper's rectangle, the garment fills most of the view: red dominates
    for seed in range(6):
        view = np.asarray(shopper_view(image, mask, np.random.default_rng(seed)), np.float32)
        red = (view[..., 0] > view[..., 1] + 60) & (view[..., 0] > view[..., 2] + 60)
        assert red.mean() > 0.3, f"seed {seed}: {red.mean():.2f} of the view is the garment"
    shop = catalogue_view(image, np.random.default_rng(0))
    assert 0.8 * image.width <= shop.width <= image.width and 0.8 * image.height <= shop.height <= image.height


def test_info_nce_prefers_the_true_pairs_and_soft_codes_stay_in_range():
    torch.manual_seed(0)
    a = torch.randn(16, 64)
    near = a + 0.1 * torch.randn(16, 64)
    paired, top1 = info_nce(a, near, 0.1)
    shuffled, _ = info_nce(a, near[torch.randperm(16)], 0.1)
    assert top1 == 1.0 and paired < shuffled
    codes = soft_codes(torch.rand(32, 10) * 5)
    assert codes.abs().max() < 1 and codes.mean(0).abs().max() < 0.3  # centred over the batch


def test_instance_network_freezes_its_first_stages_and_every_batch_norm():
    net = InstanceNetwork(CodeNetwork("mobilenet_v2", pretrained="none"), frozen_stages=3)
    net.train()
    body = net.net.net
    assert not any(p.requires_grad for p in body.get_submodule("features.6").parameters())
    assert all(p.requires_grad for p in body.get_submodule("features.7").parameters())
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)  # ImageNet statistics kept on small CPU batches
    with pytest.raises(ValueError, match="frozen stages must be between 0 and 5, got 6"):
        InstanceNetwork(CodeNetwork("mobilenet_v2", pretrained="none"), frozen_stages=6)


def test_instance_recall_finds_identical_views_and_counts_ties_for_the_truth():
    torch.manual_seed(0)
    coder = AppearanceCoder(CodeNetwork("mobilenet_v2", pretrained="none"), image_size=48)
    images = [_garment(tuple(int(v) for v in np.random.default_rng(i).integers(0, 255, 3))) for i in range(6)]
    coder.fit_median(images)
    same = instance_recall(coder, images, images)
    assert same["binary_r@1"] == same["float_r@1"] == 1.0 and same["queries"] == 6


def test_instance_objective_trains_saves_and_reports_before_and_after(synth_dump, tmp_path):
    cfg = AppearanceConfig(
        backbone="mobilenet_v2",
        pretrained="none",
        objective="instance",
        image_size=48,
        epochs=1,
        batch_size=16,
        max_products=48,
        median_products=48,
        val_share=0.25,
    )
    metrics = train_appearance(synth_dump, tmp_path, config=cfg, progress=False)
    assert metrics["objective"] == "instance" and metrics["steps"] >= 2
    held = metrics["held_out_shopper_views"]
    assert set(held) == {"before", "after"} and held["after"]["queries"] >= 10
    coder = AppearanceCoder.load(tmp_path)
    assert coder.encode([_garment()]).shape == (1, coder.code_bytes)
    assert coder.ranking == INSTANCE_RANKING  # an index built on it ranks by the code first


def test_instance_settings_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="unknown appearance objective 'pairs'"):
        AppearanceConfig(objective="pairs")
    with pytest.raises(ValueError, match="temperature must be positive"):
        AppearanceConfig(objective="instance", temperature=0)
    with pytest.raises(ValueError, match="frozen_stages=2 needs ImageNet weights"):
        AppearanceConfig(pretrained="none", frozen_stages=2)
    # frozen stages are kept for ImageNet weights and dropped when the network starts from scratch
    imagenet = AppearanceConfig(backbone="mobilenet_v2", pretrained="imagenet", frozen_stages=3)
    assert imagenet.resolved().frozen_stages == 3
    scratch = AppearanceConfig(backbone="mobilenet_v2", pretrained="auto", frozen_stages=3)
    monkeypatch.setattr("appearance.train.default_pretrained", lambda name=None: "none")
    assert scratch.resolved().frozen_stages == 0 and scratch.resolved().pretrained == "none"
