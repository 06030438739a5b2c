"""Local PCA LID_*: exact spectra, duplicates -> 0, accuracy on manifolds of known LID (vs scikit-dimension)."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import NearestNeighbors

from lidmem.data.manifolds import affine_subspace, sphere, torus, union_of_subspaces, von_mises_mixture
from lidmem.estimators import LocalPCA, local_pca
from lidmem.estimators.local_pca import neighbourhood_spectra, pairwise_distance_percentile


def test_spectra_match_sklearn_pca_and_exclude_self():
    """X=None: neighbourhood = the k nearest *other* points; explained variances as sklearn PCA."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 7)) * np.array([3, 2, 1, 0.5, 0.2, 0.1, 0.05])
    est = LocalPCA(k=10, radius=None).fit(x)
    _, idx = NearestNeighbors(n_neighbors=10).fit(x).kneighbors()  # sklearn excludes each point itself
    for i in (0, 17, 59):
        ref = PCA().fit(x[idx[i]]).explained_variance_[:7]
        np.testing.assert_allclose(est.spectra_[i].numpy(), ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("m,D", [(12, 40), (40, 6)])
def test_gram_and_covariance_paths_agree(m, D):
    rng = np.random.default_rng(1)
    hoods = rng.standard_normal((5, m, D))
    mask = np.ones((5, m), dtype=bool)
    mask[1, 5:] = False  # a neighbourhood restricted to 5 points
    got = neighbourhood_spectra(torch.as_tensor(hoods), torch.as_tensor(mask)).numpy()
    for b in range(5):
        pts = hoods[b][mask[b]]
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1][: min(len(pts) - 1, D)]
        np.testing.assert_allclose(got[b, : len(ev)], ev, rtol=1e-8, atol=1e-10)
        assert np.isnan(got[b, len(ev) :]).all()


def test_pairwise_percentile_exact_and_sampled():
    x = torch.as_tensor(np.random.default_rng(2).standard_normal((300, 5)))
    d = torch.nn.functional.pdist(x).numpy()
    assert pairwise_distance_percentile(x, 10.0) == pytest.approx(np.percentile(d, 10), rel=1e-9)
    approx = pairwise_distance_percentile(x, 10.0, max_pairs=20000, seed=0)
    assert approx == pytest.approx(np.percentile(d, 10), rel=0.03)
    assert approx == pairwise_distance_percentile(x, 10.0, max_pairs=20000, seed=0)  # deterministic under seed


def test_point_mass_and_isolated_duplicates_are_zero_with_paper_defaults():
    # von Mises circle + 15% point mass at the origin (paper Sec. 4.1)
    s = von_mises_mixture(100, seed=0)
    lid = local_pca(s.points, k=20, tau="percentile", radius="percentile").numpy()
    assert (lid[s.lid == 0] == 0).all()
    assert (lid[s.lid == 1] >= 1).all()
    # "training images" on a 5-dim subspace of R^50 plus one image copied 12 times, far from the rest
    base = affine_subspace(300, dim=5, ambient_dim=50, seed=1).points
    dup = np.repeat(base[:1] + 5.0, 12, axis=0)
    x = np.concatenate([base, dup])
    lid = local_pca(x, k=30, tau="percentile", radius="percentile").numpy()
    assert (lid[300:] == 0).all()
    assert (lid[:300] > 0).all() and np.median(lid[:300]) >= 4  # the paper's tau drops ~10% of the spectrum


def test_defaults_estimate_dimension_and_zero_duplicates():
    """Default settings: a dimension estimate (2-plane in R^20 with noise -> 2) that still
    gives exact duplicates LID 0."""
    base = affine_subspace(400, dim=2, ambient_dim=20, noise=1e-3, seed=8).points
    x = np.concatenate([base, np.repeat(base[:3], 5, axis=0)])
    lid = local_pca(x, k=40).numpy()
    dup = np.zeros(len(x), dtype=bool)
    dup[:3] = dup[400:] = True
    assert (lid[dup] == 0).all()
    assert (lid[~dup] == 2).mean() >= 0.95


def test_radius_zero_restricts_to_exact_duplicates():
    base = affine_subspace(200, dim=3, ambient_dim=10, seed=3).points
    x = np.concatenate([base, base[:4], base[:4]])  # three copies of 4 points inside the manifold
    lid = local_pca(x, k=20, tau="fo", radius=0.0).numpy()
    dup = np.zeros(len(x), dtype=bool)
    dup[:4] = dup[200:] = True
    assert (lid[dup] == 0).all()
    assert (lid[~dup] == 3).all()


def _mae(pred, true):
    return float(np.abs(np.asarray(pred, dtype=float) - true).mean())


@pytest.mark.parametrize(
    "name,make,k",
    [
        ("plane 2 in R^20", lambda: affine_subspace(400, dim=2, ambient_dim=20, seed=0), 40),
        ("plane 5 in R^20, noise", lambda: affine_subspace(400, dim=5, ambient_dim=20, noise=0.01, seed=1), 40),
        ("S^2 in R^10", lambda: sphere(400, dim=2, ambient_dim=10, seed=2), 40),
        ("torus in R^10", lambda: torus(1000, ambient_dim=10, seed=3), 15),
        ("union 0,1,2,5 in R^10", lambda: union_of_subspaces(400, seed=4), 40),
    ],
)
def test_accuracy_no_worse_than_skdim_lpca(name, make, k):
    skdim = pytest.importorskip("skdim")
    s = make()
    ours = local_pca(s.points, k=k, tau="fo", radius=None).numpy()
    with np.errstate(all="ignore"):
        theirs = skdim.id.lPCA(ver="FO", alphaFO=0.05).fit_pw(s.points, n_neighbors=k).dimension_pw_
    assert _mae(ours, s.lid) < 0.15, name
    assert _mae(ours, s.lid) <= _mae(theirs, s.lid) + 1e-12, name


def test_paper_tau_is_the_percentile_of_pooled_spectra():
    s = sphere(300, dim=2, ambient_dim=6, noise=0.01, seed=4)
    est = LocalPCA(k=30, tau="percentile", radius="percentile").fit(s.points)
    pool = est.spectra_[~torch.isnan(est.spectra_)].numpy()
    pool = pool[pool > est.zero_floor_]
    assert est.tau_ == pytest.approx(np.percentile(pool, 10))
    lid = est.estimate().numpy()
    np.testing.assert_array_equal(lid, (est.spectra_.nan_to_num(0).numpy() > est.tau_).sum(axis=1))


def test_query_points_use_fitted_reference():
    s = union_of_subspaces(1200, dims=(1, 2, 4), ambient_dim=8, seed=5)
    ref, q, true = s.points[::2], s.points[1::2], s.lid[1::2]  # new points on the same pieces
    est = LocalPCA(k=40, tau="fo", radius=None).fit(ref)
    lid = est.estimate(q).numpy()
    assert lid.shape == (len(q),) and lid.dtype == np.int64
    assert _mae(lid, true) < 0.1
    # a far-away query copy-pasted 3 times into the reference data: LID 0 at the copies and at the query
    x = np.concatenate([s.points, np.repeat(s.points[:1] + 20.0, 3, axis=0)])
    est2 = LocalPCA(k=40, tau="percentile", radius="percentile").fit(x)
    assert est2.estimate(s.points[:1] + 20.0).tolist() == [0]


def test_errors_name_the_argument():
    x = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(ValueError, match=r"k=50.*n_samples=50.*49"):
        local_pca(x, k=50)
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[3, 1] = np.nan
        local_pca(bad, k=5)
    with pytest.raises(ValueError, match="data"):
        local_pca(np.zeros((0, 4)), k=5)
    with pytest.raises(ValueError, match="rank"):
        local_pca(np.zeros(10), k=5)
    with pytest.raises(ValueError, match="query has 3 features"):
        local_pca(x, x[:, :3], k=5)
    with pytest.raises(ValueError, match="tau="):
        local_pca(x, k=5, tau="median")
    with pytest.raises(ValueError, match="radius="):
        local_pca(x, k=5, radius="auto")
    with pytest.raises(TypeError, match="k must be an integer"):
        local_pca(x, k=5.0)
    with pytest.raises(NotFittedError):
        LocalPCA().estimate()


def test_input_not_mutated_and_params_roundtrip():
    x = np.random.default_rng(0).standard_normal((40, 3))
    before = x.copy()
    est = LocalPCA(k=5, tau="fo")
    est.fit(x)
    np.testing.assert_array_equal(x, before)
    assert est.get_params()["tau"] == "fo" and repr(est) == "LocalPCA(k=5)"
    assert repr(LocalPCA(k=5, tau="percentile")) == "LocalPCA(k=5, tau='percentile')"


def test_fitted_radius_is_the_pairwise_percentile():
    x = np.concatenate([np.random.default_rng(7).standard_normal((150, 6)), np.zeros((40, 6))])
    d = torch.nn.functional.pdist(torch.as_tensor(x)).numpy()
    assert LocalPCA(k=10, radius="percentile", radius_percentile=10.0).fit(x).radius_ == pytest.approx(np.percentile(d, 10), rel=1e-9, abs=1e-12)
    assert LocalPCA(k=10, radius="percentile", radius_percentile=3.0).fit(x).radius_ == 0.0  # 780 of 17955 pairs are duplicates


def test_batched_eigvalsh_equals_eigvalsh_on_two_threads():
    """One thread per part of the batch (the 2-thread MKL kernel is 100-400x slower): same values,
    thread count restored."""
    from lidmem.estimators.local_pca import batched_eigvalsh

    g = torch.as_tensor(np.random.default_rng(0).standard_normal((40, 30, 60)))
    gram = g @ g.transpose(1, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = batched_eigvalsh(gram)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(got.numpy(), np.linalg.eigvalsh(gram.numpy()), rtol=1e-10, atol=1e-9)


def test_query_equal_to_a_reference_point_is_its_duplicate():
    """radius=0: a query row equal to a reference row has a 2-point neighbourhood of copies -> LID 0
    (also when the data are float32, whose centring is not exactly invertible in float64)."""
    s = affine_subspace(500, dim=2, ambient_dim=20, noise=1e-3, seed=0)
    x = s.points.astype(np.float32)
    for search in ("exact", "faiss"):
        if search == "faiss":
            pytest.importorskip("faiss")
        est = LocalPCA(k=30, search=search).fit(x)
        assert est.estimate(x[:20]).tolist() == [0] * 20, search
        assert est.estimate(x[:20] + 1e-3).tolist() == [2] * 20, search


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_faiss_search_gives_the_exact_search_lid(dtype):
    """search='faiss' (blocked IVF neighbours): same LID as exact neighbours on manifolds of known
    dimension, duplicates -> 0, new queries as well."""
    pytest.importorskip("faiss")
    s = union_of_subspaces(3000, dims=(1, 2, 4), ambient_dim=12, seed=5)
    x = np.concatenate([s.points, np.repeat(s.points[:2], 3, axis=0)]).astype(dtype)
    true = np.concatenate([s.lid, np.zeros(6)])
    true[:2] = 0
    exact = LocalPCA(k=40).fit(x)
    approx = LocalPCA(k=40, search="faiss").fit(x)
    assert approx.search_ == "faiss" and exact.search_ == "exact"
    assert approx._ivf.nlist >= 50
    a, b = exact.estimate().numpy(), approx.estimate().numpy()
    np.testing.assert_array_equal(a, true)
    np.testing.assert_array_equal(b, a)
    # the same neighbourhoods (up to a few approximate ones): the same spectra
    close = np.isclose(approx.spectra_.numpy(), exact.spectra_.numpy(), rtol=1e-6, atol=1e-9, equal_nan=True).all(axis=1)
    assert close.mean() >= 0.9
    q = s.points[1::7] + 1e-4
    np.testing.assert_array_equal(approx.estimate(q).numpy(), exact.estimate(q).numpy())


def test_estimate_from_neighbours_matches_estimate():
    from lidmem.memorization.copy_detection import nearest_neighbors

    s = sphere(600, dim=3, ambient_dim=30, noise=1e-3, seed=2)
    est = LocalPCA(k=25, tau="percentile", radius="percentile").fit(s.points)
    _, nn = nearest_neighbors(s.points, s.points, 26, search="exact")
    idx = np.stack([row[row != i][:25] for i, row in enumerate(nn)])
    np.testing.assert_array_equal(est.estimate_from_neighbours(s.points, idx).numpy(), est.estimate().numpy())
    with pytest.raises(ValueError, match="shape"):
        est.estimate_from_neighbours(s.points, idx[:, :5])
    with pytest.raises(ValueError, match="search="):
        LocalPCA(k=5, search="annoy").fit(s.points)


def test_eigen_count_by_inertia_equals_eigvalsh_count():
    """count_eigenvalues_above (LDL^T inertia, no eigenvalues) == number of eigvalsh values above tau,
    on centred Gram matrices and on matrices with repeated eigenvalues at and near tau."""
    from lidmem.estimators.local_pca import count_eigenvalues_above

    rng = np.random.default_rng(0)
    y = rng.standard_normal((60, 41, 30)) * np.geomspace(1, 1e-3, 30)
    y -= y.mean(axis=1, keepdims=True)
    gram = torch.as_tensor(y @ y.transpose(0, 2, 1))
    ev = np.linalg.eigvalsh(gram.numpy())
    for tau in (1e-9, 1e-4, 1e-2, 0.5, float(np.median(ev[:, -1]))):
        np.testing.assert_array_equal(count_eigenvalues_above(gram, tau).numpy(), (ev > tau).sum(axis=1))
    per_matrix = torch.as_tensor(ev[:, -5])  # exactly at the 5th largest: it does not count, 4 do
    per_matrix = per_matrix * (1 + 1e-9)
    np.testing.assert_array_equal(count_eigenvalues_above(gram, per_matrix).numpy(), np.full(60, 4))
    # ties: eigenvalues in {-2, ..., 2}, each repeated, thresholds just below/above a tie and between
    q, _ = np.linalg.qr(rng.standard_normal((50, 25, 25)))
    lam = rng.integers(-2, 3, (50, 25)).astype(float)
    a = torch.as_tensor(np.einsum("bij,bj,bkj->bik", q, lam, q))
    a = (a + a.transpose(1, 2)) / 2
    for tau in (-2.5, -1e-8, 1e-8, 1 - 1e-8, 1 + 1e-8, 0.5, 2.5):
        np.testing.assert_array_equal(count_eigenvalues_above(a, tau).numpy(), (lam > tau).sum(axis=1), err_msg=str(tau))


def test_gram_counts_equal_counts_of_gram_spectra_with_masks():
    from lidmem.estimators.local_pca import gram_counts, gram_spectra

    rng = np.random.default_rng(3)
    y = torch.as_tensor(rng.standard_normal((40, 21, 50)) * np.geomspace(1, 1e-2, 50))
    mask = torch.ones(40, 21, dtype=torch.bool)
    mask[::3, 7:] = False
    mask[1, 1:] = False  # one point: no explained variance
    gram = y @ y.transpose(1, 2)
    spectra = gram_spectra(gram, mask, 50)
    for thr in (1e-6, 1e-3, 0.05, 0.3):
        np.testing.assert_array_equal(gram_counts(gram, mask, thr).numpy(), (spectra.nan_to_num(0) > thr).sum(dim=1).numpy())
    with pytest.raises(ValueError, match="threshold"):
        gram_counts(gram, mask, 0.0)


@pytest.mark.parametrize("search", ["exact", "faiss"])
def test_query_counts_with_global_tau_equal_counting_spectra(search):
    """estimate(query) with a global tau counts by inertia; same LID as counting the spectra."""
    if search == "faiss":
        pytest.importorskip("faiss")
    s = sphere(800, dim=4, ambient_dim=64, noise=1e-2, seed=6)
    est = LocalPCA(k=40, tau="percentile", radius=0.0, search=search).fit(s.points[:700])
    q = torch.as_tensor(np.concatenate([s.points[700:], s.points[:5]]))
    spec = est._spectra_ivf(q, self_query=False, desc="") if search == "faiss" else est._spectra(q, exclude_self=False, desc="")
    want = (spec.nan_to_num(0) > max(est.tau_, est.zero_floor_)).sum(dim=1).numpy()
    got = est.estimate(q).numpy()
    np.testing.assert_array_equal(got, want)
    assert (got[-5:] == 0).all() and (got[:-5] > 4).all()
