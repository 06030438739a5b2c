"""``lidmem t2i`` commands on a tiny Stable Diffusion pipeline saved to disk, and the prompt-file
formats of the public Stable Diffusion memorization sets (``;``-separated tables, one-per-line text)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lidmem.cli.main import app
from lidmem.text2image import read_prompts
from lidmem.text2image.testing import tiny_components


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    root = tmp_path_factory.mktemp("t2i_cli")
    c = tiny_components(seed=0, latent=True)
    StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(root / "sd")
    imgs = root / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype("uint8")).save(imgs / f"{i}.png")
    (root / "caps.txt").write_text("a red cat\na dog\n\nzqx house\n")
    (root / "mem.txt").write_text("zqx house\nzqx cat zqx\n")
    # the layout of sd1_memorized_laion.csv: ';'-separated, unnamed index, Caption column
    (root / "non.csv").write_text(";Caption;URL;Index\n0;a red cat;http://x/1.jpg;5\n1;a blue dog, big;http://x/2.jpg;7\n")
    return root


def test_read_prompts_formats(files, tmp_path):
    assert read_prompts(files / "non.csv") == ["a red cat", "a blue dog, big"]
    assert read_prompts(files / "caps.txt") == ["a red cat", "a dog", "zqx house"]
    pd.DataFrame({"text": ["x y", "z"]}).to_parquet(tmp_path / "p.parquet")
    assert read_prompts(tmp_path / "p.parquet") == ["x y", "z"]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no caption column"):
        read_prompts(tmp_path / "bad.csv")
    assert read_prompts(tmp_path / "bad.csv", column="b") == ["2"]
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "none.txt")


def test_score_images_command(files, tmp_path):
    r = CliRunner().invoke(app, ["t2i", "score-images", str(files / "imgs"), "--model", str(files / "sd"), "--captions", str(files / "caps.txt"), "--out", str(tmp_path), "--no-progress"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "image_scores.csv")
    assert list(df.columns) == ["file", "caption", "flipd_uncond", "flipd_cond", "cfg_norm"]
    assert list(df.file) == ["0.png", "1.png", "2.png"] and np.isfinite(df.flipd_uncond).all()
    assert (tmp_path / "image_scores.png").is_file()
    r = CliRunner().invoke(app, ["t2i", "score-images", str(files / "imgs"), "--model", str(files / "sd"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "need --captions" in r.output
    # captions from a table with a file column, in any row order; unconditional FLIPD needs none
    (tmp_path / "caps.csv").write_text("file,caption\n2.png,zqx house\n0.png,a red cat\n1.png,\n")
    r = CliRunner().invoke(app, ["t2i", "score-images", str(files / "imgs"), "--model", str(files / "sd"), "--captions", str(tmp_path / "caps.csv"), "--metrics", "cfg_norm", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "t" / "image_scores.csv", keep_default_na=False)
    assert list(t.caption) == ["a red cat", "", "zqx house"]
    assert t.cfg_norm.iloc[1] == 0.0 and t.cfg_norm.iloc[0] > 0  # empty caption: no CFG vector
    assert t.cfg_norm.iloc[0] == pytest.approx(df.cfg_norm.iloc[0], rel=1e-5)


def test_detect_prompts_command(files, tmp_path):
    r = CliRunner().invoke(
        app,
        ["t2i", "detect-prompts", "--model", str(files / "sd"), "--prompts", str(files / "non.csv"), "--memorized", str(files / "mem.txt"),
         "--num-inference-steps", "10", "--n-generations", "1", "--out", str(tmp_path), "--format", "parquet", "--no-progress"],
    )
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "prompt_metrics.parquet")
    assert list(df.memorized) == [True, True, False, False]
    assert list(df.source) == ["mem.txt", "mem.txt", "non.csv", "non.csv"]
    det = pd.read_parquet(tmp_path / "detection.parquet")
    assert list(det.metric) == ["a_cfg", "a_scfg", "a_flipd", "wen"]
    assert det.auroc.between(0, 1).all() and (tmp_path / "prompt_metrics.png").is_file()
    r = CliRunner().invoke(app, ["t2i", "detect-prompts", "--model", str(tmp_path / "nope"), "--prompts", str(files / "non.csv")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_attribute_and_mitigate_commands(files, tmp_path):
    r = CliRunner().invoke(app, ["t2i", "attribute", "--model", str(files / "sd"), "--prompt", "a photo of the car zqx", "--num-inference-steps", "4", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    att = pd.read_csv(tmp_path / "a" / "attribution.csv")
    assert att.score.sum() == pytest.approx(1.0) and "car" in set(att.word)
    assert (tmp_path / "a" / "attribution_0000.png").is_file() and (tmp_path / "a" / "top_words.csv").is_file()
    r = CliRunner().invoke(
        app,
        ["t2i", "mitigate", "--model", str(files / "sd"), "--prompt", "a red cat zqx", "--reference", str(files / "imgs" / "0.png"),
         "--metric", "a_cfg", "--ks", "1,2", "--repeats", "1", "--steps", "3", "--n-generations", "1", "--out", str(tmp_path / "m")],
    )
    assert r.exit_code == 0, r.output
    mit = pd.read_csv(tmp_path / "m" / "mitigation.csv")
    assert set(mit.method) == {"original", "attribution", "uniform", "rta"} and len(mit) == 7
    assert (tmp_path / "m" / "mitigation.png").is_file()
