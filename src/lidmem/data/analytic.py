"""Analytic score oracles: Gaussian mixtures supported on affine subspaces.

Each mixture component ``k`` is a Gaussian supported on a ``d_k``-dimensional affine subspace of
``R^D``,

    x = mu_k + U_k diag(s_k) z,      z ~ N(0, I_{d_k}),

with an orthonormal basis ``U_k`` (``D x d_k``, a random rotation), an offset ``mu_k`` and scales
``s_k``; ``d_k = 0`` is a point mass at ``mu_k``. Every point drawn from component ``k`` has true
local intrinsic dimension ``LID(x) = d_k``.

Under any lidmem SDE (transition kernel ``N(psi(t) x_0, sigma(t)^2 I)``, eq. 5 of the paper) the
perturbed density is again a Gaussian mixture,

    p_t(x) = sum_k w_k N(x; psi mu_k, psi^2 Sigma_k + sigma^2 I),   Sigma_k = U_k diag(s_k^2) U_k^T,

so its score ``grad_x log p_t(x)`` is known in closed form at every ``t``. These objects are used
as exact score models (test oracles) for the model-based LID estimators: they can be passed
wherever a :class:`~lidmem.diffusion.score.ScoreModel` is expected (``model(x, t) -> score`` and a
``.sde`` attribute), and they are differentiable with ``torch.func.jvp``/``jacrev``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
import numpy as np
import torch

from .._validation import check_points, check_positive_int, make_generator
from ..diffusion.sde import SDE, VPSDE

__all__ = ["GaussianMixtureOnSubspaces", "GaussianOnSubspace"]


class GaussianMixtureOnSubspaces:
    """Mixture of Gaussians on random affine subspaces of ``R^D``, with an exact score at every t.

    Parameters
    ----------
    dims : sequence of int, default=(0, 2, 5, 8)
        Dimension ``d_k`` of each component's support (``0 <= d_k <= ambient_dim``; 0 is a point
        mass). One component per entry.
    ambient_dim : int, default=20
        Ambient dimension ``D``.
    weights : sequence of float or None, default=None
        Mixture weights (normalised to sum to 1); equal weights when None.
    scales : float or sequence of float, default=1.0
        Standard deviation of each component along its subspace (one value for all components or
        one per component).
    offset_scale : float, default=4.0
        Offsets ``mu_k`` are drawn as ``offset_scale * N(0, I_D)``; larger values separate the
        components more (and move them away from the origin).
    seed : int, default=0
        Seed of the random rotations and offsets.
    sde : SDE, default=VPSDE()
        Forward process whose marginals ``p_t`` the score describes.

    Attributes
    ----------
    bases : list of Tensor of shape (D, d_k)
        Orthonormal bases ``U_k`` (float64).
    offsets : Tensor of shape (K, D)
        Component means ``mu_k`` (float64).
    weights : Tensor of shape (K,)
        Normalised mixture weights (float64).

    Notes
    -----
    The score of component ``k`` is ``-C_k^{-1} (x - psi mu_k)`` with
    ``C_k = psi^2 Sigma_k + sigma^2 I``; with ``a_i = psi^2 s_i^2 / (psi^2 s_i^2 + sigma^2)``,
    ``C_k^{-1} = (I - U_k diag(a) U_k^T) / sigma^2`` and
    ``log det C_k = sum_i log(psi^2 s_i^2 + sigma^2) + (D - d_k) log sigma^2``. The mixture score is
    the responsibility-weighted sum, responsibilities from a log-sum-exp. Computations run in
    float64 and are cast back to the input dtype.

    Examples
    --------
    >>> from lidmem.data.analytic import GaussianMixtureOnSubspaces
    >>> gm = GaussianMixtureOnSubspaces(dims=[0, 2], ambient_dim=5, seed=0)
    >>> x, lid, comp = gm.sample(4, seed=1)
    >>> x.shape, gm(x, 0.01).shape
    (torch.Size([4, 5]), torch.Size([4, 5]))
    """

    def __init__(
        self,
        dims: Sequence[int] = (0, 2, 5, 8),
        ambient_dim: int = 20,
        weights: Sequence[float] | None = None,
        scales: float | Sequence[float] = 1.0,
        offset_scale: float = 4.0,
        seed: int = 0,
        sde: SDE | None = None,
    ) -> None:
        D = check_positive_int(ambient_dim, "ambient_dim")
        dims_list = list(dims) if not isinstance(dims, (int, np.integer)) else [dims]
        if len(dims_list) == 0:
            raise ValueError("dims is empty; give at least one component dimension, e.g. dims=[2]")
        for dk in dims_list:
            if isinstance(dk, bool) or not isinstance(dk, (int, np.integer)) or not (0 <= dk <= D):
                raise ValueError(f"dims={dims_list!r}: every entry must be an integer in [0, ambient_dim={D}]")
        K = len(dims_list)
        if weights is None:
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
            if w.shape != (K,) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
                raise ValueError(f"weights={weights!r} must be {K} positive numbers (one per entry of dims)")
            w = w / w.sum()
        if isinstance(scales, (int, float, np.floating, np.integer)):
            sc = [float(scales)] * K
        else:
            sc = [float(s) for s in scales]
            if len(sc) != K:
                raise ValueError(f"scales has {len(sc)} entries but dims has {K}; give one scale or one per component")
        if any(not (s > 0 and math.isfinite(s)) for s in sc):
            raise ValueError(f"scales={scales!r} must be positive and finite")
        if not (offset_scale >= 0 and math.isfinite(offset_scale)):
            raise ValueError(f"offset_scale={offset_scale!r} must be a finite number >= 0")
        if sde is None:
            sde = VPSDE()
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a lidmem SDE (VPSDE, VESDE, DDPMSchedule); got {type(sde).__name__}")

        g = make_generator(seed)
        bases = []
        for dk in dims_list:
            if dk == 0:
                bases.append(torch.zeros(D, 0, dtype=torch.float64))
                continue
            q, r = torch.linalg.qr(torch.randn(D, dk, generator=g, dtype=torch.float64))
            bases.append(q * torch.sign(torch.diagonal(r)))  # deterministic orientation
        offsets = float(offset_scale) * torch.randn(K, D, generator=g, dtype=torch.float64)

        self.dims = [int(d) for d in dims_list]
        self.ambient_dim = D
        self.scales = sc
        self.offset_scale = float(offset_scale)
        self.seed = seed
        self.sde = sde
        self.weights = w
        self.bases = bases
        self.offsets = offsets

    # ------------------------------------------------------------------ sampling
    @property
    def n_components(self) -> int:
        return len(self.dims)

    def sample(
        self, n: int, seed: int | torch.Generator | None = 0, *, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` points from the (unperturbed, t = 0) mixture.

        Returns
        -------
        x : Tensor of shape (n, D)
            Points, in ``dtype``.
        true_lid : Tensor of shape (n,), int64
            Dimension ``d_k`` of the component each point came from.
        component : Tensor of shape (n,), int64
            Component index ``k`` of each point.
        """
        n = check_positive_int(n, "n")
        g = make_generator(seed)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=g)
        x = self.offsets[comp].clone()
        for k, dk in enumerate(self.dims):
            idx = (comp == k).nonzero().flatten()
            if dk == 0 or idx.numel() == 0:
                continue
            z = torch.randn(idx.numel(), dk, generator=g, dtype=torch.float64) * self.scales[k]
            x[idx] += z @ self.bases[k].T
        lid = torch.tensor(self.dims, dtype=torch.int64)[comp]
        return x.to(dtype), lid, comp

    # ------------------------------------------------------------------ densities
    def _times(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not isinstance(t, torch.Tensor):
            return torch.full((n,), float(t), dtype=torch.float64, device=x.device)
        t = t.to(device=x.device, dtype=torch.float64)
        if t.ndim == 0:
            return t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"t must be a float or a tensor of shape (n,)=({n},); got shape {tuple(t.shape)}")
        return t

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.ambient_dim:
            raise ValueError(
                f"x must have shape (n, {self.ambient_dim}) (or (n, ...) with {self.ambient_dim} features); got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.ambient_dim)

    def _component_terms(self, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component log densities ``(n, K)`` (incl. log weights) and scores ``(n, K, D)``."""
        xf = self._flat(x).to(torch.float64)
        tt = self._times(xf, t)
        psi = self.sde.psi(tt).to(torch.float64)  # (n,)
        sig2 = self.sde.sigma(tt).to(torch.float64) ** 2  # (n,)
        D = self.ambient_dim
        dev = xf.device
        logps, scores = [], []
        for k, dk in enumerate(self.dims):
            mu = self.offsets[k].to(dev)
            r = xf - psi[:, None] * mu  # (n, D)
            quad = (r**2).sum(-1)
            logdet = D * torch.log(sig2)
            score = r
            if dk > 0:
                U = self.bases[k].to(dev)
                s2 = torch.full((dk,), self.scales[k] ** 2, dtype=torch.float64, device=dev)
                var = psi[:, None] ** 2 * s2 + sig2[:, None]  # (n, dk) eigenvalues of C on the subspace
                a = psi[:, None] ** 2 * s2 / var  # (n, dk)
                proj = r @ U  # (n, dk)
                score = r - (a * proj) @ U.T
                quad = quad - (a * proj**2).sum(-1)
                logdet = logdet + torch.log(var / sig2[:, None]).sum(-1)
            score = -score / sig2[:, None]
            quad = quad / sig2
            logp = -0.5 * (quad + logdet + D * math.log(2 * math.pi)) + torch.log(self.weights[k])
            logps.append(logp)
            scores.append(score)
        return torch.stack(logps, -1), torch.stack(scores, 1)

    def log_prob(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Log density ``log p_t(x)`` of the perturbed mixture, shape ``(n,)`` (float64)."""
        logps, _ = self._component_terms(x, t)
        return torch.logsumexp(logps, -1)

    def responsibilities(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``p_t(k | x)``, shape ``(n, K)`` (float64)."""
        logps, _ = self._component_terms(x, t)
        return torch.softmax(logps, -1)

    def score(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Exact score ``grad_x log p_t(x)``, same shape and dtype as ``x``.

        Parameters
        ----------
        x : Tensor of shape (n, D) or (n, ...) with D features
        t : float or Tensor of shape (n,)
            Continuous SDE time in [0, 1] (not the network's model time).
        """
        logps, scores = self._component_terms(x, t)
        resp = torch.softmax(logps, -1)  # stable log-sum-exp responsibilities
        s = (resp[:, :, None] * scores).sum(1)
        return s.reshape(x.shape).to(x.dtype)

    __call__ = score

    def true_flipd(self, x: torch.Tensor, t0: float) -> torch.Tensor:
        """FLIPD(x, t0) of this mixture computed in closed form (float64, shape ``(n,)``).

        Uses the exact divergence of the mixture score,
        ``tr grad s = sum_k r_k (tr grad s_k + ||s_k||^2) - ||s||^2`` with ``tr grad s_k = -tr C_k^{-1}``,
        evaluated at ``psi(t0) x``. As ``t0 -> 0`` it tends to the true LID ``d_k`` of points on
        component ``k``; use it to separate estimator error from the finite-``t0`` bias.
        """
        xf = self._flat(check_points(x)).to(torch.float64)
        tt = self._times(xf, t0)
        psi = self.sde.psi(tt).to(torch.float64)
        sig2 = self.sde.sigma(tt).to(torch.float64) ** 2
        xt = psi[:, None] * xf
        logps, scores = self._component_terms(xt, tt)
        resp = torch.softmax(logps, -1)
        D = self.ambient_dim
        trs = []
        for k, dk in enumerate(self.dims):
            tr = -D / sig2
            if dk > 0:
                var = psi**2 * self.scales[k] ** 2 + sig2
                tr = tr + dk * (1.0 / sig2 - 1.0 / var)
            trs.append(tr)
        tr_k = torch.stack(trs, -1)  # (n, K)
        sq_k = (scores**2).sum(-1)  # (n, K)
        s = (resp[:, :, None] * scores).sum(1)
        div = (resp * (tr_k + sq_k)).sum(-1) - (s**2).sum(-1)
        return D + sig2 * (div + (s**2).sum(-1))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dims={self.dims}, ambient_dim={self.ambient_dim}, scales={self.scales}, "
            f"offset_scale={self.offset_scale}, seed={self.seed!r}, sde={self.sde!r})"
        )


class GaussianOnSubspace(GaussianMixtureOnSubspaces):
    """A single Gaussian on a random ``dim``-dimensional affine subspace of ``R^D`` (one-component
    :class:`GaussianMixtureOnSubspaces`); ``dim = 0`` is a point mass.

    Parameters
    ----------
    dim : int
        Dimension of the support.
    ambient_dim : int, default=20
    scale : float, default=1.0
    offset_scale : float, default=4.0
    seed : int, default=0
    sde : SDE, default=VPSDE()
    """

    def __init__(
        self,
        dim: int,
        ambient_dim: int = 20,
        scale: float = 1.0,
        offset_scale: float = 4.0,
        seed: int = 0,
        sde: SDE | None = None,
    ) -> None:
        super().__init__(dims=[dim], ambient_dim=ambient_dim, scales=scale, offset_scale=offset_scale, seed=seed, sde=sde)
