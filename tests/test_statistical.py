"""scikit-dimension estimators made pointwise: at the fitted points and at new query points."""

import sys

import numpy as np
import pytest

pytest.importorskip("skdim")

from lidmem.data.manifolds import affine_subspace  # noqa: E402
from lidmem.estimators import SkdimEstimator, skdim_lid  # noqa: E402


@pytest.fixture(scope="module")
def plane3():
    return affine_subspace(400, dim=3, ambient_dim=10, seed=0)


@pytest.mark.parametrize("estimator,tol", [("mle", 0.5), ("twonn", 0.5), ("ess", 0.3), ("lpca", 0.0)])
def test_pointwise_at_data_and_queries(plane3, estimator, tol):
    ref, q = plane3.points[::2], plane3.points[1::2]
    est = SkdimEstimator(estimator, k=40).fit(ref)
    at_data = est.estimate().numpy()
    at_query = est.estimate(q).numpy()
    assert at_data.shape == (200,) and at_query.shape == (200,)
    assert abs(np.median(at_data) - 3) <= tol
    assert abs(np.median(at_query) - 3) <= tol


def test_lpca_matches_skdim_fit_pw(plane3):
    import skdim

    ours = skdim_lid(plane3.points, estimator="lpca", k=25).numpy()
    theirs = skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(plane3.points, n_neighbors=25).dimension_pw_
    np.testing.assert_array_equal(ours, theirs)


def test_duplicates(plane3):
    x = np.concatenate([plane3.points, plane3.points[:5]])
    mle = skdim_lid(x, estimator="mle", k=20).numpy()
    assert (mle[:5] == 0).all() and (mle[400:] == 0).all()  # a zero neighbour distance: MLE gives 0
    assert np.median(mle[5:400]) > 2
    with pytest.raises(ValueError, match="5 duplicate rows.*numpy.unique"):
        skdim_lid(x, estimator="twonn", k=20)


def test_errors(plane3):
    with pytest.raises(ValueError, match="estimator='danco'"):
        skdim_lid(plane3.points, estimator="danco")
    with pytest.raises(ValueError, match=r"k=400.*399"):
        skdim_lid(plane3.points, estimator="mle", k=400)
    with pytest.raises(ValueError, match="query has 4 features"):
        skdim_lid(plane3.points, plane3.points[:3, :4], estimator="mle", k=10)


def test_missing_skdim_names_the_extra(monkeypatch, plane3):
    monkeypatch.setitem(sys.modules, "skdim", None)
    monkeypatch.setitem(sys.modules, "skdim.id", None)
    with pytest.raises(ImportError, match=r'pip install "lidmem\[skdim\]"'):
        skdim_lid(plane3.points, estimator="mle", k=10)
