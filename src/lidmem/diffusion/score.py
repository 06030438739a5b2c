"""One adapter that turns any network into a score model s(x, t) = grad_x log p_t(x)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn

from .._validation import ArgumentError, ArgumentTypeError, check_choice
from ..utils import append_dims
from .sde import SDE

__all__ = ["ScoreModel", "Prediction", "PREDICTIONS", "prediction_to_score", "check_extra_args", "model_call_errors", "conditioning_rows", "time_tensor"]

Prediction = Literal["score", "epsilon", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("score", "epsilon", "x0", "v")


def prediction_to_score(prediction: str, out: torch.Tensor, x: torch.Tensor, psi: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score from a network output ``out`` at ``x = psi x0 + sigma eps``.

    ``psi`` and ``sigma`` are already broadcast to ``x``'s shape. ``prediction`` is one of
    :data:`PREDICTIONS`; see :class:`ScoreModel` for the formulas.
    """
    if prediction == "score":
        return out
    if prediction == "epsilon":
        return -out / sigma
    if prediction == "x0":
        return (psi * out - x) / sigma**2
    if prediction == "v":
        # v = psi * eps - sigma * x0 and x = psi * x0 + sigma * eps with psi^2 + sigma^2 = 1
        eps = sigma * x + psi * out
        return -eps / sigma
    raise ValueError(f"prediction={prediction!r} is not supported; choose one of {', '.join(map(repr, PREDICTIONS))}")


def check_extra_args(extra_args: Mapping[str, Any] | None, name: str = "extra_args") -> dict[str, Any]:
    """Validate the conditioning mapping passed to a score model as ``model(x, t, **extra_args)``.

    Returns a new ``dict`` (empty for None). Raises TypeError unless ``extra_args`` is a mapping
    with string keys (e.g. ``{"cond": prompt_embeds, "guidance_scale": 7.5}``).
    """
    if extra_args is None:
        return {}
    if not isinstance(extra_args, Mapping) or not all(isinstance(k, str) for k in extra_args):
        raise TypeError(
            f"{name} must be a mapping of keyword arguments for model(x, t, **{name}), e.g. "
            f"{{'cond': embeds, 'guidance_scale': 7.5}}, or None; got {type(extra_args).__name__}"
        )
    return dict(extra_args)


_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '([^']+)'")


_DTYPE_MISMATCH = re.compile(r"same dtype|expected scalar type|should be the same|Expected .*dtype|found dtype", re.IGNORECASE)


@contextlib.contextmanager
def model_call_errors(extra_args: Mapping[str, Any] | None, x: torch.Tensor | None = None, name: str = "extra_args") -> Iterator[None]:
    """Name the argument when the model refuses an estimator's input.

    ``model(x, t, **extra_args)`` passes the keys unchanged (never routed by introspection), so a
    key the model does not take surfaces as Python's ``TypeError: ... got an unexpected keyword
    argument 'foo'`` from inside the user's function: around the estimator's model calls it
    becomes an :class:`~lidmem._validation.ArgumentTypeError` naming ``name`` and the key. A
    float64 ``x`` meeting a network that computes in another dtype (a closure hides its
    parameters, so :func:`~lidmem._validation.as_model_dtype` cannot cast it first) becomes an
    :class:`~lidmem._validation.ArgumentTypeError` naming ``x`` and the cast. Any other error
    passes unchanged.
    """
    try:
        yield
    except (ArgumentTypeError, ArgumentError):
        raise
    except TypeError as exc:
        m = _UNEXPECTED_KEYWORD.search(str(exc))
        if m is None or not isinstance(extra_args, Mapping) or m.group(1) not in extra_args:
            raise
        key = m.group(1)
        raise ArgumentTypeError(
            f"{name} has key {key!r} but the model does not take it ({' '.join(str(exc).split())}); "
            f"give only keyword arguments that model(x, t, **{name}) accepts", argument=name) from exc
    except RuntimeError as exc:
        if x is None or x.dtype != torch.float64 or not _DTYPE_MISMATCH.search(str(exc)):
            raise
        raise ArgumentTypeError(
            f"x has dtype float64 but the model computes in another dtype ({' '.join(str(exc).split())}); "
            "pass x as float32 (x.float(), or x.astype(numpy.float32))", argument="x") from exc


def conditioning_rows(extra_args: Mapping[str, Any], n: int, rows: slice = slice(None), repeats: int = 1) -> dict[str, Any]:
    """The conditioning of the points ``x[rows]`` of a batch of ``n`` points, each point repeated
    ``repeats`` times in a row (``x[rows].repeat_interleave(repeats, dim=0)``, as the estimators
    stack probes or noisy copies).

    Convention (the one rule for stacked rows): a tensor value whose first dimension is ``n`` holds
    one entry per point and is sliced and repeated like ``x``; every other value (floats, None,
    tensors of batch 1 that the model broadcasts, ...) is passed unchanged.
    """
    out: dict[str, Any] = {}
    for key, value in extra_args.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
            value = value[rows]
            if repeats > 1:
                value = value.repeat_interleave(repeats, dim=0)
        out[key] = value
    return out


def time_tensor(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Times of shape ``(n,)`` for the batch ``x`` (``n = x.shape[0]``), in ``x``'s dtype but at
    least float32 (half-precision times would move a DDPM timestep by a good fraction)."""
    dtype = torch.promote_types(x.dtype, torch.float32) if x.dtype.is_floating_point else torch.float32
    return torch.full((x.shape[0],), float(t), dtype=dtype, device=x.device)


def network_output(out: Any, fn: Any = None) -> torch.Tensor:
    """The tensor a network returned: itself, the ``.sample`` of a diffusers output object
    (``UNet2DOutput``, ``UNet2DConditionOutput``) or the first element of a tuple/list
    (``return_dict=False``). Anything else: ``TypeError`` saying what to pass."""
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    name = type(fn).__name__ if fn is not None else "the network"
    raise TypeError(f"{name} returned {type(out).__name__}, not a tensor; pass a callable fn(x, t) that returns a tensor of x's shape (e.g. lambda x, t: net(x, t).sample)")


def text_conditioned(fn: Any) -> int | None:
    """``cross_attention_dim`` of a text-conditioned diffusers UNet (``UNet2DConditionModel``, a
    subclass, ``torch.compile(unet)``), read from its ``.config``; None for any other callable."""
    dim = getattr(getattr(fn, "config", None), "cross_attention_dim", None)
    return dim if isinstance(dim, int) else None


def call_network(fn: Any, x: torch.Tensor, t_model: torch.Tensor, extra_args: Mapping[str, Any], text_dim: int | None = None) -> torch.Tensor:
    """``fn(x, t_model, **extra_args)`` as a tensor (:func:`network_output`). ``text_dim`` (from
    :func:`text_conditioned`) marks a bare text-conditioned UNet: called without
    ``encoder_hidden_states`` it is refused with a ``TypeError`` saying what to pass (diffusers'
    own error names a missing positional argument)."""
    if text_dim is not None and "encoder_hidden_states" not in extra_args:
        raise TypeError(
            f"{type(fn).__name__} is a text-conditioned diffusers UNet: pass its conditioning as "
            f"extra_args={{'encoder_hidden_states': embeds}} (shape (n, L, {text_dim})), or wrap it in "
            "lidmem.text2image.TextToImageModel for prompts and classifier-free guidance "
            "(extra_args={'cond': ..., 'uncond': ..., 'guidance_scale': ...})"
        )
    return network_output(fn(x, t_model, **extra_args), fn)


class ScoreModel(nn.Module):
    """Wrap ``fn(x, t_model)`` so that ``forward(x, t)`` always returns the score.

    Conventions
    -----------
    - ``x`` has shape ``(n, ...)`` (batch first; vectors ``(n, d)`` or images ``(n, c, h, w)``).
    - ``t`` is the continuous SDE time in [0, 1], a float or a tensor of shape ``(n,)``. The
      network receives ``sde.model_time(t)`` of shape ``(n,)`` (identity for :class:`VPSDE`
      and :class:`VESDE`, the fractional timestep for :class:`DDPMSchedule`).
    - Conditioning: keyword arguments of ``forward(x, t, **extra_args)`` (class labels, text
      embeddings, ...) are passed unchanged to ``fn(x, t_model, **extra_args)``. Estimators and
      samplers take them as ``extra_args={...}`` (k-diffusion's convention) and repeat per-point
      tensors for stacked rows (:func:`conditioning_rows`).
    - With ``x_t = psi(t) x_0 + sigma(t) eps``, the network output is converted as

      ========== =====================================================
      prediction score s(x, t)
      ========== =====================================================
      "score"    the output itself
      "epsilon"  ``-eps / sigma(t)``                     (eq. 10)
      "x0"       ``(psi(t) x0_hat - x) / sigma(t)^2``
      "v"        ``-(sigma x + psi v) / sigma``, v = psi eps - sigma x0 (VP/DDPM only)
      ========== =====================================================

    Parameters
    ----------
    fn : callable or nn.Module
        ``fn(x, t_model) -> tensor`` of ``x``'s shape. Modules are registered as submodules, so
        ``.to(device)`` and ``.eval()`` reach them. A bare diffusers ``UNet2DModel`` /
        ``UNet2DConditionModel`` is accepted: its output object's ``.sample`` is used (so is
        the first element of a returned tuple); conditioning such as ``encoder_hidden_states``
        goes in ``extra_args`` (a bare ``UNet2DConditionModel`` called without it raises a
        ``TypeError`` saying so; for classifier-free guidance use
        :class:`lidmem.text2image.TextToImageModel`).
    sde : SDE
        The forward process the network was trained under.
    prediction : {"score", "epsilon", "x0", "v"}, default="score"
        What ``fn`` predicts.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sde: SDE, prediction: Prediction = "score") -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(x, t); got {type(fn).__name__}")
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a lidmem SDE (VPSDE, VESDE, DDPMSchedule); got {type(sde).__name__}")
        check_choice(prediction, "prediction", PREDICTIONS)
        if prediction == "v" and not sde.variance_preserving:
            raise ValueError(f"prediction='v' needs a variance-preserving SDE; got {sde!r}")
        if isinstance(fn, nn.Module):
            self.net = fn
        else:
            self.net = None
            self._fn = fn
        self.sde = sde
        self.prediction = prediction
        self._text_dim = text_conditioned(fn)

    def raw(self, x: torch.Tensor, t: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """The wrapped network's output at continuous time ``t`` (shape ``(n,)``)."""
        fn = self.net if self.net is not None else self._fn
        return call_network(fn, x, self.sde.model_time(t), extra_args, self._text_dim)

    def _times(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        elif t.ndim == 0:
            t = t.to(dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be a float or a tensor of shape (n,)=({x.shape[0]},); got shape {tuple(t.shape)}")
        return t

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """Score s(x, t), same shape as ``x`` (conditioning ``extra_args`` passed to the network)."""
        t = self._times(x, t)
        out = self.raw(x, t, **extra_args)
        if out.shape != x.shape:
            raise ValueError(f"the wrapped network returned shape {tuple(out.shape)} for input shape {tuple(x.shape)}")
        return self.output_to_score(out, x, t)

    def output_to_score(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a raw network output at times ``t`` (shape ``(n,)``) to the score."""
        if self.prediction == "score":
            return out
        sigma = append_dims(self.sde.sigma(t).to(x.dtype), x.ndim)
        # epsilon needs sigma only (each SDE lookup is a few small ops, paid twice per call under
        # forward-mode AD)
        psi = sigma if self.prediction == "epsilon" else append_dims(self.sde.psi(t).to(x.dtype), x.ndim)
        return prediction_to_score(self.prediction, out, x, psi, sigma)

    def epsilon(self, x: torch.Tensor, t: float | torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """Noise prediction eps(x, t) = -sigma(t) s(x, t)."""
        tt = self._times(x, t)
        return -append_dims(self.sde.sigma(tt).to(x.dtype), x.ndim) * self.forward(x, tt, **extra_args)

    def denoise(self, x: torch.Tensor, t: float | torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """Tweedie's x0 estimate (x + sigma^2 s) / psi."""
        tt = self._times(x, t)
        sigma = append_dims(self.sde.sigma(tt).to(x.dtype), x.ndim)
        psi = append_dims(self.sde.psi(tt).to(x.dtype), x.ndim)
        return (x + sigma**2 * self.forward(x, tt, **extra_args)) / psi
