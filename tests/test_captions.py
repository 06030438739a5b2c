"""One caption rule and one image decoder for ``lidmem score`` and ``lidmem t2i`` (issue 10)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from lidmem.data.io import CAPTION_COLUMNS, decode_image, find_caption_column
from lidmem.scoring.sources import ParquetSource
from lidmem.text2image import read_prompts


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_score_and_t2i_read_the_same_caption_column(tmp_path):
    """A table with both ``text`` and ``prompt`` columns: both commands read ``prompt``."""
    imgs = [np.full((4, 4), 40 * i, np.uint8) for i in range(3)]
    df = pd.DataFrame({"image": [_png(a) for a in imgs], "text": ["t0", "t1", "t2"], "Prompt": ["p0", "p1", "p2"]})
    df.to_parquet(tmp_path / "c.parquet")
    assert CAPTION_COLUMNS.index("prompt") < CAPTION_COLUMNS.index("text")
    src = ParquetSource(tmp_path / "c.parquet")
    assert src.caption_column == "Prompt"
    assert src.read(0, 3).captions == ["p0", "p1", "p2"]
    assert read_prompts(tmp_path / "c.parquet") == ["p0", "p1", "p2"]
    assert find_caption_column(["a", "TEXT"]) == "TEXT"
    assert find_caption_column(["a", "b"], required=False) is None
    with pytest.raises(ValueError, match="no caption column"):
        find_caption_column(["a", "b"], where="t.csv")
    with pytest.raises(ValueError, match="column='x' is not in t.csv"):
        find_caption_column(["a", "b"], "x", "t.csv")


def test_one_decoder(tmp_path):
    """decode_image returns the 8-bit values / 255, grey as one channel, RGB as three; bytes and paths agree."""
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 15
    rgb = np.stack([grey, 255 - grey, grey // 2], -1)
    (tmp_path / "g.png").write_bytes(_png(grey))
    out = decode_image(tmp_path / "g.png")
    assert out.shape == (1, 4, 4) and np.array_equal(out[0], grey / np.float32(255.0))
    out = decode_image(_png(rgb))
    assert out.shape == (3, 4, 4) and np.array_equal(out, rgb.transpose(2, 0, 1) / np.float32(255.0))
    assert decode_image(_png(grey), "RGB").shape == (3, 4, 4)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png is not a readable image"):
        decode_image(tmp_path / "bad.png")
