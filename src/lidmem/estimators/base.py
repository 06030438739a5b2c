"""Shared constructor-parameter plumbing of the estimator classes (scikit-learn's contract).

Every estimator class stores each keyword of ``__init__`` unchanged under the same attribute name;
:class:`Estimator` then provides ``get_params`` / ``set_params`` (read from the constructor's
signature, as scikit-learn's ``BaseEstimator`` does) and a ``repr`` that lists the parameters that
differ from their defaults. Parameters without a default (a model, a generator) are left out of
the ``repr``.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["Estimator"]


class Estimator:
    """Base class: ``get_params``, ``set_params`` and ``repr`` from the ``__init__`` signature."""

    #: Parameters never shown by ``repr`` (large objects such as models).
    _repr_skip: tuple[str, ...] = ()

    @classmethod
    def _param_defaults(cls) -> dict[str, Any]:
        """Constructor parameter -> default (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(cls.__init__)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name (scikit-learn's ``get_params``; ``deep`` is accepted and
        ignored: no parameter is itself an estimator)."""
        return {name: getattr(self, name) for name in self._param_defaults()}

    def set_params(self, **params: Any) -> Any:
        """Set constructor parameters by name (scikit-learn's ``set_params``); returns ``self``.

        Raises
        ------
        ValueError
            For a name that is not a constructor parameter.
        """
        valid = self._param_defaults()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; valid parameters are {', '.join(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        shown = []
        for name, default in self._param_defaults().items():
            if name in self._repr_skip or default is inspect.Parameter.empty:
                continue
            value = getattr(self, name)
            try:
                same = bool(value == default)
            except Exception:  # array-like parameters: show them
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"
