"""The audit's reliability panel: verdicts for a planted weak model, too few copies, off-scale FLIPD,
and a sound audit; the same warnings in summary.json and at the top of report.html."""

import json
import re

import numpy as np
import pytest

from lidmem.memorization.reliability import audit_reliability
from lidmem.workflows.audit import write_audit

COMPARABLE = {"comparable": True, "scale_offset": 0.1, "od_margin": 0.5}


def _rel(**kw):
    args = dict(n_samples=300, n_out_of_range=0, lid_theta=np.linspace(5, 40, 300), lid_theta_name="lid_theta_flipd", d=64,
                mmh=COMPARABLE, n_copies=30, n_exact_copies=20)
    args.update(kw)
    return audit_reliability(**args)


def test_sound_audit_has_no_warnings():
    r = _rel()
    assert r["level"] == "ok" and r["warnings"] == [] and r["verdict"].startswith("No reliability warnings")
    assert r["lid_theta_scale"]["on_scale"] and r["lid_theta_scale"]["fraction_outside_0_d"] == 0.0


def test_weak_model_verdict():
    # the photo run: 197 of 300 samples outside the range, FLIPD median -87 at d = 256
    flipd = np.r_[np.full(150, -87.0), np.full(150, -69.0)]
    r = _rel(n_out_of_range=197, lid_theta=flipd, d=256, mmh={"comparable": False, "scale_offset": -80.0}, n_copies=19, n_exact_copies=6)
    assert r["level"] == "unreliable"
    assert r["verdict"] == "Model too weak to audit: most samples leave the data range (197 of 300)."
    assert r["samples_out_of_range"]["fraction"] == pytest.approx(197 / 300)
    assert r["lid_theta_scale"]["on_scale"] is False and r["lid_theta_scale"]["fraction_outside_0_d"] == 1.0
    text = " ".join(r["warnings"])
    assert "197 of 300" in text and "off its scale" in text and "not comparable" in text and "Only 6 exact copies" in text


def test_few_or_no_copies_and_caution():
    r = _rel(n_copies=4, n_exact_copies=4)
    assert r["level"] == "unreliable" and r["verdict"].startswith("Too few copies to measure detection: 4")
    r = _rel(n_copies=0, n_exact_copies=0)
    assert r["verdict"].startswith("No copies found") and any("cannot be measured" in w for w in r["warnings"])
    r = _rel(n_out_of_range=60)  # 20%: a warning, not a refusal
    assert r["level"] == "caution" and "60 of 300" in r["warnings"][0]
    # a median inside [0, d] within the 5% margin stays on scale
    assert _rel(lid_theta=np.full(300, -2.0))["lid_theta_scale"]["on_scale"] is True
    with pytest.raises(ValueError, match="n_samples"):
        _rel(n_samples=0)


@pytest.fixture(scope="module")
def planted_audits(point_mass_images):
    """The oracle audit of tests/test_audit.py (exact score, 12 copies) and the same samples x 5:
    a planted weak model whose samples all leave the data range."""
    from lidmem.estimators import FLIPD, LocalPCA
    from lidmem.memorization.audit import TrainingImages, audit_memorization

    gm, train, samples = point_mass_images
    tr = TrainingImages(train, [f"t{i}" for i in range(len(train))])
    kw = dict(lid_theta=FLIPD(gm, t0=0.01, trace="exact", progress=False), normal_bundle=None, lid_star=LocalPCA(k=30, radius=0.0),
              t0_sweep=(0.01, 0.1), progress=False)
    good = audit_memorization(gm, tr, samples=samples, **kw)
    with pytest.warns(UserWarning, match="leave the training data's value range"):
        weak = audit_memorization(gm, tr, samples=samples * 5.0, **kw)
    return good, weak


def test_audit_summary_and_report(planted_audits, tmp_path):
    good, weak = planted_audits
    rel = good.summary["reliability"]
    assert rel["n_copies"] == int((good.samples["copy_label"] != "none").sum()) >= 12 and rel["n_exact_copies"] == 12
    assert rel["samples_out_of_range"]["n"] == 0
    assert rel["lid_theta_scale"]["on_scale"] and rel["lid_theta_scale"]["d"] == 64
    assert rel["level"] in ("ok", "caution") and not rel["verdict"].startswith("Model too weak")
    wrel = weak.summary["reliability"]
    assert wrel["verdict"].startswith("Model too weak to audit: most samples leave the data range")
    assert wrel["samples_out_of_range"]["fraction"] > 0.9
    # detection rows and the t0 sweep carry intervals that contain the point estimate
    for row in good.summary["detection"] + good.summary["flipd_t0_sweep"]:
        if row["auroc"] is not None:
            lo, hi = row["auroc_ci"]
            assert lo <= row["auroc"] <= hi and row["n_positive"] >= 1
    paths = write_audit(weak, tmp_path / "weak")
    summary = json.loads(paths["summary"].read_text())
    assert summary["reliability"]["verdict"] == wrel["verdict"]
    html = paths["report"].read_text()
    body = html.split("<body>")[1]
    # the panel opens the report, before the summary counts and the detection table
    assert body.index("Reliability") < body.index("Summary") < body.index("Detection of copies")
    assert "Model too weak to audit" in body
    assert "{" not in body.split("<h2>Settings")[0]
    good_html = write_audit(good, tmp_path / "good")["report"].read_text()
    # AUROC cells read "0.998 [0.990, 1.000]"; the t0 sweep has its own table
    assert "AUROC [95% CI]" in good_html and "FLIPD at other times t0" in good_html
    assert re.search(r"<td[^>]*>[01]\.\d{3} \[[01]\.\d{3}, [01]\.\d{3}\]</td>", good_html)


def test_intervals_recomputed_from_samples_parquet(planted_audits, tmp_path):
    """As a reviewer would: the interval of the report from samples.parquet and the documented recipe."""
    import pandas as pd

    from lidmem.memorization.metrics import bootstrap_interval

    good, _ = planted_audits
    paths = write_audit(good, tmp_path / "good", report=False)
    df = pd.read_parquet(paths["samples"])
    summary = json.loads(paths["summary"].read_text())
    row = next(r for r in summary["detection"] if r["positive"] == "copy (exact or near)" and r["score"] == "lid_theta_flipd")
    ref = bootstrap_interval(df["copy_label"] != "none", df["lid_theta_flipd"], higher_is_positive=False, seed=summary["settings"]["seed"])
    assert row["auroc_ci"] == pytest.approx(ref["auroc_ci"]) and row["tpr_at_1pct_fpr_ci"] == pytest.approx(ref["tpr_ci"])


def test_in_range_fraction_known_answer():
    from lidmem.memorization.reliability import in_range_fraction

    x = np.zeros((10, 1, 4, 4))
    x[:3, 0, 0, 0] = 1.2   # beyond 1 + 0.05 * 2
    x[3, 0, 1, 1] = -1.09  # inside the tolerance
    r = in_range_fraction(x)
    assert r["n_in_range"] == 7 and r["fraction"] == 0.7 and r["sample_max"] == pytest.approx(1.2)
    assert in_range_fraction(x, tol=0.0)["n_in_range"] == 6
    with pytest.raises(ValueError, match="samples"):
        in_range_fraction(np.zeros((0, 3)))
