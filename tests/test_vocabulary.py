"""One vocabulary (issue 10.2): renamed arguments keep working for one release with a
DeprecationWarning and give the same numbers; the direction of every score is stated once; the
rank-cut forms are shared; defaults are defined once (lidmem.defaults)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lidmem._validation import renamed_argument
from lidmem.memorization.metrics import HIGHER_IS_MEMORIZED, higher_is_memorized

pytestmark = pytest.mark.usefixtures("one_thread")


def _plane(n=300, d=3, D=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, D, generator=g, dtype=torch.float64)


def test_renamed_argument_warns_uses_the_old_value_and_refuses_both():
    with pytest.warns(DeprecationWarning, match="'chunk_size' is deprecated.*use 'batch_size'"):
        assert renamed_argument(None, 7, new="batch_size", old="chunk_size") == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert renamed_argument(5, None, new="batch_size", old="chunk_size") == 5  # no warning without the old name
    with pytest.raises(TypeError, match="pass only batch_size"):
        renamed_argument(5, 7, new="batch_size", old="chunk_size")


def test_chunk_size_alias_of_batch_size_in_copy_detection_and_local_pca():
    from lidmem.estimators import LocalPCA, local_pca
    from lidmem.memorization.copy_detection import find_copies, nearest_neighbors

    g = np.random.default_rng(0)
    q, r = g.normal(size=(30, 5)), g.normal(size=(50, 5))
    new = nearest_neighbors(q, r, 2, search="exact", batch_size=7)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        old = nearest_neighbors(q, r, 2, search="exact", chunk_size=7)
    np.testing.assert_array_equal(new[1], old[1])
    np.testing.assert_allclose(new[0], old[0])
    train = np.repeat(r[:10], 3, axis=0)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        m_old = find_copies(train[:5] + 0.0, train, k=2, search="exact", chunk_size=2)
    m_new = find_copies(train[:5] + 0.0, train, k=2, search="exact", batch_size=2)
    np.testing.assert_array_equal(m_old.labels, m_new.labels)
    x = _plane()
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        est = LocalPCA(k=20, chunk_size=16)
    assert est.batch_size == 16 and est.get_params()["batch_size"] == 16
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        old_lid = local_pca(x, k=20, chunk_size=16)
    assert torch.equal(old_lid, local_pca(x, k=20, batch_size=16))
    assert old_lid.tolist() == [3] * len(x)


def test_local_pca_takes_the_shared_threshold_forms():
    from lidmem.estimators import LocalPCA

    x = _plane()
    x = x + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)  # noise below the gap
    assert LocalPCA(k=25, threshold="gap").fit_estimate(x).tolist() == [3] * len(x)
    assert LocalPCA(k=25, threshold=1e-6).fit_estimate(x).tolist() == [3] * len(x)  # between the noise (1e-12) and the plane
    assert torch.equal(LocalPCA(k=25, threshold="percentile").fit_estimate(x), LocalPCA(k=25, tau="percentile").fit_estimate(x))
    # exact duplicates still get 0 under "gap"
    dup = torch.cat([x, x[:1].repeat(30, 1)])
    lid = LocalPCA(k=25, threshold="gap").fit_estimate(dup)
    assert lid[-30:].tolist() == [0] * 30 and lid[0] == 0
    assert (lid[1 : len(x)] == 3).double().mean() > 0.95  # a point whose 25 neighbours are all the copies reads 0 too
    with pytest.raises(TypeError, match="both threshold"):
        LocalPCA(k=25, threshold="gap", tau="percentile").fit(x)
    with pytest.raises(ValueError, match="threshold"):
        LocalPCA(k=25, threshold="median").fit(x)


def test_generator_alias_of_seed_in_samplers_and_training_times():
    from lidmem.data.analytic import GaussianMixtureOnSubspaces
    from lidmem.diffusion.sampling import integrate_euler_maruyama
    from lidmem.diffusion.training import sample_times

    with pytest.warns(DeprecationWarning, match="'generator' is deprecated"):
        a = sample_times(50, t_min=1e-3, log_uniform_fraction=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, sample_times(50, t_min=1e-3, log_uniform_fraction=0.5, seed=3))
    gm = GaussianMixtureOnSubspaces(dims=[1, 2], ambient_dim=4, seed=0)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(1.0, 0.5, 5, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="'generator' is deprecated"):
        old = integrate_euler_maruyama(gm, x, ts, generator=torch.Generator().manual_seed(5))
    assert torch.equal(old, integrate_euler_maruyama(gm, x, ts, seed=5))


def test_text2image_generator_and_n_steps_aliases():
    from lidmem.text2image import TextToImageModel, cfg_flipd_at, cfg_norm_after_euler, step_metric
    from lidmem.text2image.testing import tiny_components

    model = TextToImageModel(**tiny_components(seed=0, latent=False))
    cond, uncond = model.encode_prompt(["a photo"] * 2)
    x = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with pytest.warns(DeprecationWarning, match="'generator' is deprecated"):
            old = cfg_flipd_at(model, x, 0.1, cond, uncond, 2.0, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(old, cfg_flipd_at(model, x, 0.1, cond, uncond, 2.0, seed=4))
        with pytest.warns(DeprecationWarning, match="'generator' is deprecated"):
            old = step_metric(model, "a_flipd", x, 0.1, cond, uncond, 2.0, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(old, step_metric(model, "a_flipd", x, 0.1, cond, uncond, 2.0, seed=4))
        with pytest.warns(DeprecationWarning, match="'n_steps' is deprecated"):
            old = cfg_norm_after_euler(model, x, ["a photo"] * 2, n_steps=2, inputs="latents")
        torch.testing.assert_close(old, cfg_norm_after_euler(model, x, ["a photo"] * 2, euler_steps=2, inputs="latents"))


def test_score_dataset_nb_scores_alias(tmp_path):
    from PIL import Image

    from lidmem.scoring import read_settings, score_dataset

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    with pytest.warns(DeprecationWarning, match="'nb_scores' is deprecated"):
        score_dataset(None, tmp_path / "imgs", tmp_path / "out", metrics=["png_complexity"], nb_scores=8, progress=False)
    params = read_settings(tmp_path / "out")["settings"]["params"]
    assert params["n_scores"] == 8 and "nb_scores" not in params


def test_cli_deprecated_options_still_work(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from lidmem.cli.main import app

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    res = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--metrics", "png_complexity",
                                   "--nb-scores", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "--nb-scores is deprecated" in res.output
    res = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "o2"), "--metrics", "png_complexity",
                                   "--nb-scores", "8", "--n-scores", "4", "--no-progress"])
    assert res.exit_code == 2 and "pass only --n-scores" in res.output


def test_one_direction_table_covers_every_score():
    from lidmem.scoring import metric_names
    from lidmem.text2image import IMAGE_METRICS, PROMPT_METRICS
    from lidmem.text2image.detectors import DETECTORS

    for name in [*metric_names(), *IMAGE_METRICS, *PROMPT_METRICS, *DETECTORS]:
        assert isinstance(higher_is_memorized(name), bool), name
    assert not higher_is_memorized("flipd") and not higher_is_memorized("a_flipd") and higher_is_memorized("cfg_norm")
    for det in DETECTORS.values():
        assert det.higher_is_memorized == HIGHER_IS_MEMORIZED[det.name]
    with pytest.warns(DeprecationWarning):
        assert DETECTORS["a_flipd"].larger_is_memorized is False
    with pytest.warns(DeprecationWarning):
        from lidmem.text2image import LARGER_IS_MEMORIZED
    assert LARGER_IS_MEMORIZED == {m: HIGHER_IS_MEMORIZED[m] for m in PROMPT_METRICS}
    with pytest.raises(ValueError, match="no direction is known"):
        higher_is_memorized("nonsense")


def test_defaults_are_defined_once():
    import inspect

    from lidmem import defaults
    from lidmem.estimators import flipd, normal_bundle
    from lidmem.estimators.t0 import DEFAULT_T0_FACTOR
    from lidmem.memorization.mmh import mmh_analysis
    from lidmem.scoring import score_dataset
    from lidmem.text2image import score_images

    def default(f, name):
        return inspect.signature(f).parameters[name].default

    assert default(flipd, "t0") == default(score_dataset, "t0") == default(score_images, "flipd_t0") == defaults.FLIPD_T0
    assert default(normal_bundle, "t0") == default(score_dataset, "nb_t0") == defaults.NB_T0
    assert default(mmh_analysis, "t0") == defaults.FLIPD_T0_WITH_TRAINING_DATA == "auto"
    assert DEFAULT_T0_FACTOR == defaults.T0_AUTO_FACTOR == 2.0
    assert default(score_dataset, "nb_threshold") == defaults.NB_THRESHOLD == "percentile"
