"""scikit-learn parameter contract shared by the estimator classes (lidmem.estimators.base)."""

from __future__ import annotations

import pytest

from lidmem.estimators import FLIPD, JacobianRank, LocalPCA, NormalBundle, SkdimEstimator


def _model(x, t):
    return x


@pytest.mark.parametrize(
    "est, params, shown",
    [
        (FLIPD(_model, t0=0.02, trace="hutchinson"), {"t0": 0.02, "trace": "hutchinson", "ad": "auto", "model": _model}, "FLIPD(t0=0.02, trace='hutchinson')"),
        (NormalBundle(_model, n_scores=8), {"n_scores": 8, "threshold": "gap"}, "NormalBundle(n_scores=8)"),
        (JacobianRank(_model, threshold=0.1), {"threshold": 0.1, "mode": JacobianRank(_model).mode}, "JacobianRank(threshold=0.1)"),
        (LocalPCA(k=5, tau="percentile"), {"k": 5, "tau": "percentile", "radius": 0.0}, "LocalPCA(k=5, tau='percentile')"),
        (SkdimEstimator("twonn", k=30), {"estimator": "twonn", "k": 30}, "SkdimEstimator(estimator='twonn', k=30)"),
    ],
)
def test_get_params_repr_set_params(est, params, shown):
    got = est.get_params()
    for key, value in params.items():
        assert got[key] == value
    assert repr(est) == shown
    # every constructor parameter round-trips through the constructor
    clone = type(est)(**got)
    assert clone.get_params() == got
    first = next(iter(params))
    assert est.set_params(**{first: params[first]}) is est
    with pytest.raises(ValueError, match=f"invalid parameter 'nope' for {type(est).__name__}; valid parameters are"):
        est.set_params(nope=1)
