"""LID estimators.

Model-based (LID_theta): :func:`flipd`, :func:`flipd_curve`, :func:`normal_bundle`,
:func:`jacobian_rank`. Data-based (LID_*): :func:`local_pca`, and the scikit-dimension
estimators. All return per-point estimates of shape ``(n,)``.
"""

# Names are resolved on first access so that each estimator module (and its optional
# dependencies) is imported only when used.
_LAZY = {
    "flipd": "flipd",
    "flipd_curve": "flipd",
    "select_t0": "flipd",
    "FLIPD": "flipd",
    "normal_bundle": "normal_bundle",
    "NormalBundle": "normal_bundle",
    "jacobian_rank": "jacobian",
    "JacobianRank": "jacobian",
    "local_pca": "local_pca",
    "LocalPCA": "local_pca",
    "skdim_lid": "statistical",
    "SkdimEstimator": "statistical",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        # Importing submodule ``flipd`` binds the *module* to this package's attribute ``flipd``,
        # shadowing the function of the same name; bind every public name of that module here.
        for public, source in _LAZY.items():
            if source == _LAZY[name] and hasattr(module, public):
                globals()[public] = getattr(module, public)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
