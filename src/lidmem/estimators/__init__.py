"""LID estimators.

Model-based (LID_theta): :func:`flipd`, :func:`flipd_curve`, :func:`flipd_at`, :func:`select_t0`,
:func:`t0_from_training_data` (label-free FLIPD t0 from the training set),
:func:`flipd_map` (per-coordinate memorization maps, shape of ``x``; :func:`relative_map` against ordinary images),
:func:`normal_bundle`, :func:`jacobian_rank`. Data-based (LID_*): :func:`local_pca`, and the
scikit-dimension estimators (:func:`skdim_lid`). All return per-point estimates of shape ``(n,)``.
Optional dependencies (scikit-dimension) are imported only when their estimator runs.
"""

from .flipd import FLIPD, flipd, flipd_at, flipd_curve, select_t0
from .jacobian import JacobianRank, jacobian_rank
from .local_pca import LocalPCA, local_pca
from .maps import flipd_map, lowest_pixels, map_concentration, relative_map, score_difference_map, to_pixel_map
from .normal_bundle import NormalBundle, normal_bundle
from .statistical import SkdimEstimator, skdim_lid
from .t0 import t0_from_training_data

__all__ = [
    "FLIPD",
    "flipd",
    "flipd_curve",
    "flipd_at",
    "select_t0",
    "t0_from_training_data",
    "flipd_map",
    "relative_map",
    "to_pixel_map",
    "lowest_pixels",
    "map_concentration",
    "score_difference_map",
    "NormalBundle",
    "normal_bundle",
    "JacobianRank",
    "jacobian_rank",
    "LocalPCA",
    "local_pca",
    "SkdimEstimator",
    "skdim_lid",
]
