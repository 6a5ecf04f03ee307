"""Colour histograms: where the mass goes, background suppression, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from indexer.colour import ColourConfig, colour_bin_name, colour_histogram


def _garment_on_white(rgb, size=(120, 160)) -> Image.Image:
    im = Image.new("RGB", size, (250, 250, 250))
    ImageDraw.Draw(im).rectangle([30, 30, 90, 140], fill=rgb)
    return im


def test_red_garment_on_white_has_its_mass_in_red_bins():
    cfg = ColourConfig()
    hist = colour_histogram(_garment_on_white((200, 30, 35)), cfg).astype(np.float32)
    assert hist.shape == (cfg.bins,) and hist.dtype == np.float32
    names = [colour_bin_name(i, cfg) for i in range(cfg.bins)]
    # red hue wraps around 0: the first and last hue buckets
    red = sum(h for h, n in zip(hist, names) if n.startswith(("h0 ", f"h{cfg.h_bins - 1} ")))
    assert red > 0.95, dict(zip(names, hist))
    assert abs(float(hist.sum()) - 1.0) < 1e-2


def test_background_is_dropped_but_a_white_garment_still_counts():
    cfg = ColourConfig()
    red = colour_histogram(_garment_on_white((200, 30, 35)), cfg)
    assert sum(float(v) for i, v in enumerate(red) if colour_bin_name(i, cfg).startswith("grey")) < 0.02
    white = colour_histogram(Image.new("RGB", (64, 64), (252, 252, 252)), cfg).astype(np.float32)
    assert white[cfg.bins - 1] > 0.99  # all in the brightest grey bin


def test_blue_and_red_differ_and_arrays_equal_images():
    cfg = ColourConfig(h_bins=12, s_bins=3, v_bins=3, grey_bins=3)
    im = _garment_on_white((35, 70, 190))
    a = colour_histogram(im, cfg)
    b = colour_histogram(np.asarray(im), cfg)
    assert a.shape == (cfg.bins,) == (12 * 3 * 3 + 3,)
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
    red = colour_histogram(_garment_on_white((200, 30, 35)), cfg).astype(np.float32)
    assert 0.5 * np.abs(red - a.astype(np.float32)).sum() > 0.9


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="h_bins"):
        ColourConfig(h_bins=0)
    with pytest.raises(ValueError, match="background_value"):
        ColourConfig(background_value=1.5)
    with pytest.raises(ValueError, match="uint8"):
        colour_histogram(np.zeros((4, 4), np.float32))


def test_a_colour_names_histogram_is_near_garments_of_that_colour():
    from foundation.schema import default_schema
    from indexer.colour import swatch_histogram

    cfg = ColourConfig()
    swatches = default_schema().colour_swatches
    assert set(swatches) == set(default_schema().group("colour").values)

    def dist(a, b):
        return 0.5 * float(np.abs(a.astype(np.float32) - b.astype(np.float32)).sum())

    names = {name: swatch_histogram(shades, cfg) for name, shades in swatches.items()}
    for name, rgb in (("red", (200, 30, 35)), ("blue", (35, 70, 190)), ("white", (240, 240, 236))):
        garment = colour_histogram(_garment_on_white(rgb), cfg)
        nearest = min(names, key=lambda n: dist(names[n], garment))
        assert nearest == name, (name, nearest)
        assert names[name].shape == (cfg.bins,) and abs(float(names[name].astype(np.float32).sum()) - 1) < 1e-2
