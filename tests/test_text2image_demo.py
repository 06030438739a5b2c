"""`lidmem demo text2image` on the shipped small model, at a reduced size (the default demo's
acceptance numbers are reported in docs/text2image-demo.md)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lidmem.experiments.text2image import Text2ImageDemoConfig, run_text2image_demo, write_text2image_demo


@pytest.fixture(scope="module")
def small_result():
    cfg = Text2ImageDemoConfig(
        n_other_prompts=16, n_other_images=48, n_generations=2, attribution_metrics=("a_flipd", "a_cfg"),
        attribution_generations=1, ks=(1, 3), repeats=1, mitigation_generations=2,
    )
    return run_text2image_demo(cfg, progress=False)


@pytest.mark.slow
def test_demo_measures_planted_memorization(small_result, tmp_path):
    r = small_result
    det = r.prompt_detection.set_index("metric")
    assert set(det.index) == {"a_cfg", "a_scfg", "a_flipd", "wen"}
    assert (det["n_positive"] == 16).all() and (det["n_negative"] == 16).all()
    # every prompt metric separates the planted trigger prompts from generic ones
    # (default demo: A^CFG 1.0, A^{s_CFG} 0.99, A^FLIPD 0.99, Wen 1.0)
    for metric in ("a_cfg", "a_scfg", "a_flipd", "wen"):
        assert det.loc[metric, "auroc"] >= 0.85, det
    # A^FLIPD: memorized prompts have LOWER values
    ps = r.prompt_scores
    assert ps.loc[ps["memorized"], "a_flipd"].median() < ps.loc[~ps["memorized"], "a_flipd"].median()
    img = r.image_detection.set_index("metric")
    # caption-free FLIPD ranks duplicated images low (AUROC 0.87 in the default demo, 48 negatives here)
    assert img.loc["flipd_uncond", "auroc"] >= 0.6
    assert img.loc["cfg_norm", "auroc"] >= 0.9
    assert r.attribution_hit_rate["a_flipd"] >= 0.7 and r.attribution_hit_rate["a_cfg"] >= 0.7
    mit = r.mitigation.set_index(["method", "k"])
    # rewriting attribution-sampled tokens breaks the copy more than rewriting uniform ones (k = 3
    # of these 11-15-token prompts; here 0.83 vs 0.94, original 0.97; k = 1 rewrites the trigger
    # too rarely for one repeat to show it), and keeps the prompt's digit
    assert mit.loc[("attribution", 3), "similarity"] < mit.loc[("uniform", 3), "similarity"] - 0.05
    assert mit.loc[("attribution", 3), "similarity"] < mit.loc[("original", 0), "similarity"] - 0.08
    assert mit.loc[("attribution", 3), "alignment"] > 0.9
    paths = write_text2image_demo(r, tmp_path)
    summary = json.loads(paths["summary"].read_text())
    assert {"prompt_detection", "image_detection", "attribution_hit_rate", "mitigation", "acceptance"} <= set(summary)
    assert "<table" in paths["report"].read_text()


def test_demo_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="lidmem.json"):
        run_text2image_demo(Text2ImageDemoConfig(model=str(tmp_path)))
    with pytest.raises(TypeError, match="Text2ImageDemoConfig"):
        run_text2image_demo({"repeats": 1})  # type: ignore[arg-type]


def test_cli_demo_reports_error_cleanly(tmp_path):
    from lidmem.cli.main import app

    res = CliRunner().invoke(app, ["demo", "text2image", "--out", str(tmp_path / "o"), "--model", str(tmp_path)])
    assert res.exit_code == 2
    assert "lidmem.json" in res.output
