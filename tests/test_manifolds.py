"""Generators of manifolds with known LID: points lie on the stated manifold and carry its dimension."""

import numpy as np
import pytest

from lidmem.data import MANIFOLDS, sample_manifold
from lidmem.data.manifolds import (
    affine_subspace,
    circle,
    helix,
    point_mass,
    sphere,
    torus,
    union_of_subspaces,
    von_mises_mixture,
)


def _rank(x, rtol=1e-9):
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return int((s > max(rtol * s[0], 1e-9)).sum())


def test_sphere_radius_and_dimension():
    s = sphere(400, dim=3, ambient_dim=9, seed=1)
    assert s.points.shape == (400, 9)
    np.testing.assert_allclose(np.linalg.norm(s.points, axis=1), 1.0, atol=1e-12)
    assert _rank(s.points) == 4  # S^3 spans a 4-dim linear subspace
    assert (s.lid == 3).all() and s.lid.dtype == np.int64


@pytest.mark.parametrize("dim,D", [(1, 5), (2, 20), (5, 20)])
def test_affine_subspace_rank(dim, D):
    s = affine_subspace(300, dim=dim, ambient_dim=D, seed=dim)
    assert _rank(s.points) == dim
    assert (s.lid == dim).all()
    assert np.linalg.norm(s.points.mean(axis=0)) > 0.1  # affine: a random offset, not through the origin


def test_circle_helix_torus_geometry():
    c = circle(200, ambient_dim=6, radius=2.5, seed=0)
    np.testing.assert_allclose(np.linalg.norm(c.points, axis=1), 2.5, atol=1e-12)
    assert _rank(c.points) == 2 and (c.lid == 1).all()
    h = helix(200, ambient_dim=7, seed=0)
    assert _rank(h.points) == 3 and (h.lid == 1).all()
    t = torus(500, ambient_dim=8, seed=0)
    r = np.linalg.norm(t.points, axis=1)  # distance to the centre lies in [R - r, R + r] = [1, 3]
    assert r.min() >= 1 - 1e-9 and r.max() <= 3 + 1e-9 and r.min() < 1.2 and r.max() > 2.8
    assert _rank(t.points) == 3 and (t.lid == 2).all()


def test_point_mass_is_one_point():
    p = point_mass(10, ambient_dim=4, seed=3)
    assert np.ptp(p.points, axis=0).max() == 0 and (p.lid == 0).all()


def test_union_pieces_have_their_dimension():
    s = union_of_subspaces(400, dims=(0, 1, 3), ambient_dim=6, seed=2)
    assert np.bincount(s.labels).tolist() == [133, 133, 134]
    for piece, d in enumerate((0, 1, 3)):
        sel = s.labels == piece
        assert _rank(s.points[sel]) == d
        assert (s.lid[sel] == d).all()
    # pieces are far apart: every point's nearest other-piece point is further than the piece diameters
    from scipy.spatial.distance import cdist

    a, b = s.points[s.labels == 1], s.points[s.labels == 2]
    assert cdist(a, b).min() > 2 * np.sqrt(3)


def test_von_mises_defaults_match_paper_setup():
    s = von_mises_mixture(100, seed=0)
    origin = s.lid == 0
    assert origin.sum() == 15  # 15% point mass at the origin
    np.testing.assert_array_equal(s.points[origin], 0.0)
    np.testing.assert_allclose(np.linalg.norm(s.points[~origin], axis=1), 1.0, atol=1e-12)
    # three components with means 0, 2pi/3, 4pi/3 and kappa=4: circular mean of each label near its centre
    big = von_mises_mixture(3000, seed=1)
    for j in range(3):
        pts = big.points[big.labels == j + 1]
        mean_angle = np.angle(pts[:, 0].mean() + 1j * pts[:, 1].mean())
        assert abs(np.angle(np.exp(1j * (mean_angle - 2 * np.pi * j / 3)))) < 0.1
        # mean resultant length of a von Mises(kappa=4) is I1(4)/I0(4) = 0.8635
        assert np.hypot(pts[:, 0].mean(), pts[:, 1].mean()) == pytest.approx(0.8635, abs=0.03)


def test_registry_and_sample_manifold():
    assert set(MANIFOLDS) >= {"point", "circle", "sphere", "torus", "subspace", "union", "von_mises"}
    for name in MANIFOLDS:
        s = sample_manifold(name, 50, seed=0)
        assert s.points.shape[0] == 50 and s.lid.shape == (50,)
        if MANIFOLDS[name].lid is not None:
            assert (s.lid == MANIFOLDS[name].lid).all()
    s = sample_manifold("sphere", 60, dim=4, ambient_dim=7, seed=0)
    assert s.points.shape == (60, 7) and (s.lid == 4).all()
    np.testing.assert_array_equal(sample_manifold("torus", 30, seed=5).points, sample_manifold("torus", 30, seed=5).points)
    assert not np.array_equal(sample_manifold("torus", 30, seed=5).points, sample_manifold("torus", 30, seed=6).points)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="'sphere'.*'torus'"):
        sample_manifold("klein_bottle", 10)
    with pytest.raises(ValueError, match="dim=3"):
        sample_manifold("circle", 10, dim=3)
    with pytest.raises(ValueError, match="ambient_dim=2"):
        sphere(10, dim=2, ambient_dim=2)
    with pytest.raises(ValueError, match="n=0"):
        circle(0)
    with pytest.raises(ValueError, match="point_mass_weight"):
        von_mises_mixture(10, point_mass_weight=1.5)
