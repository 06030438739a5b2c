"""PNG complexity: constant images compress better than noise; normalisation divides by the length."""

import io

import numpy as np
import pytest
from PIL import Image

from lidmem.memorization.complexity import png_length, png_normalized_lid


def test_png_length_orders_complexity_and_matches_pillow():
    rng = np.random.default_rng(0)
    flat = np.zeros((1, 1, 32, 32))
    noise = rng.uniform(-1, 1, (1, 1, 32, 32))
    rgb = rng.uniform(-1, 1, (1, 3, 32, 32))
    lengths = png_length(np.concatenate([flat, noise]))
    assert lengths[0] < lengths[1] / 5
    # ground truth: the encoder itself at level 9 on the same 8-bit image
    u8 = np.round((noise[0, 0] + 1) / 2 * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG", compress_level=9)
    assert lengths[1] == buf.tell()
    assert png_length(rgb)[0] > lengths[1]  # three channels of noise hold more bytes


def test_png_normalized_lid():
    rng = np.random.default_rng(1)
    imgs = np.concatenate([np.zeros((1, 1, 16, 16)), rng.uniform(-1, 1, (1, 1, 16, 16))])
    out = png_normalized_lid(np.array([4.0, 4.0]), imgs)
    np.testing.assert_allclose(out, 4.0 / png_length(imgs))
    assert out[0] > out[1]  # same LID, simpler image -> larger normalised value


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        png_length(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="3 values"):
        png_normalized_lid(np.ones(3), np.zeros((2, 1, 8, 8)))
