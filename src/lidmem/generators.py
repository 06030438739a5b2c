"""Decoder-type generators G: z -> x (for the Jacobian-rank LID_theta of App. B.3 / C.1).

:class:`MLPDecoder` is a small decoder ``z (n, latent_dim) -> x (n, *out_shape)`` with a ``tanh``
output in [-1, 1] (lidmem's image convention). :func:`train_vae` trains it as the decoder of a
Gaussian VAE (Kingma & Welling 2014). The trained decoder is checkpointed with
``save_checkpoint(kind="generator")`` (network type ``"mlp_decoder"``) and loaded with
:func:`load_generator`; samples are ``G(z)`` with ``z ~ N(0, I)`` (:func:`sample_generator`).
:func:`train_gan` trains the same decoder as the generator of a GAN (Goodfellow et al. 2014,
non-saturating loss) against an MLP discriminator; :func:`train_imle` trains it by implicit maximum
likelihood estimation (IMLE, Li & Malik 2018): each training image pulls its nearest generated
sample, a GAN whose discriminator is the nearest-neighbour distance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import check_points, check_positive_int, make_generator
from .diffusion.decoder import MLPDecoder
from .utils import chunk_slices, progress as _progress

__all__ = ["MLPDecoder", "VAETrainResult", "train_vae", "GANTrainResult", "train_gan", "train_imle", "load_generator", "sample_generator"]


class _Encoder(nn.Module):
    def __init__(self, in_dim: int, latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(depth):
            layers += [nn.Linear(in_dim if k == 0 else hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x.reshape(x.shape[0], -1))).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


@dataclass
class VAETrainResult:
    """Outcome of :func:`train_vae`: the decoder (the generator), the encoder and the losses."""

    decoder: MLPDecoder
    encoder: nn.Module
    losses: np.ndarray
    elapsed_s: float
    settings: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the decoder as a ``kind="generator"`` lidmem checkpoint."""
        from .diffusion.checkpoint import save_checkpoint

        meta = {"training": self.settings, **(extra or {})}
        return save_checkpoint(path, self.decoder, kind="generator", data_shape=self.decoder.out_shape, extra=meta)


def train_vae(
    data: Any,
    *,
    latent_dim: int = 16,
    hidden: int = 256,
    depth: int = 2,
    steps: int = 4000,
    batch_size: int = 128,
    lr: float = 1e-3,
    beta: float = 1.0,
    obs_sigma: float = 0.1,
    seed: int = 0,
    progress: bool | None = None,
) -> VAETrainResult:
    """Train a Gaussian VAE on ``data`` and return its decoder as a generator.

    Loss per image: ``||x - G(z)||^2 / (2 obs_sigma^2) + beta * KL(q(z|x) || N(0, I))`` with
    ``z = mu + exp(logvar / 2) * eps`` (reparametrisation).

    Parameters
    ----------
    data : array-like of shape (n, c, h, w) or (n, d)
        Training images in [-1, 1] (the decoder's ``tanh`` range).
    latent_dim, hidden, depth : int
        Decoder (and mirrored encoder) sizes.
    steps, batch_size : int
        Adam steps; minibatches drawn with replacement.
    lr : float, default=1e-3
    beta : float, default=1.0
        KL weight.
    obs_sigma : float, default=0.1
        Standard deviation of the Gaussian likelihood.
    seed : int, default=0
        Seeds the initial weights, the minibatches and the noise.

    Returns
    -------
    VAETrainResult
    """
    x_all = check_points(data, "data", min_samples=2, min_ndim=2).to(torch.float32)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    for name, val in (("lr", lr), ("beta", beta), ("obs_sigma", obs_sigma)):
        if not (isinstance(val, (int, float)) and val > 0 and math.isfinite(val)):
            raise ValueError(f"{name}={val!r} must be a positive float")
    gen = make_generator(seed)
    with torch.random.fork_rng(devices=[]):  # seeded weight init without touching the global RNG
        torch.manual_seed(int(seed))
        decoder = MLPDecoder(latent_dim, tuple(x_all.shape[1:]), hidden=hidden, depth=depth)
        encoder = _Encoder(math.prod(x_all.shape[1:]), latent_dim, hidden, depth)
    opt = torch.optim.Adam([*decoder.parameters(), *encoder.parameters()], lr=float(lr))
    losses = np.empty(steps)
    start = time.perf_counter()
    for step in _progress(range(steps), total=steps, desc="training VAE", disable=None if progress is None else not progress):
        x = x_all[torch.randint(len(x_all), (batch_size,), generator=gen)]
        mu, logvar = encoder(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        rec = ((decoder(z) - x) ** 2).flatten(1).sum(1) / (2 * obs_sigma**2)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1)
        loss = (rec + beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.item()
    decoder.eval()
    encoder.eval()
    settings = {"latent_dim": latent_dim, "hidden": hidden, "depth": depth, "steps": steps, "batch_size": batch_size,
                "lr": float(lr), "beta": float(beta), "obs_sigma": float(obs_sigma), "seed": int(seed)}
    return VAETrainResult(decoder, encoder, losses, time.perf_counter() - start, settings)


class _Discriminator(nn.Module):
    def __init__(self, in_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(depth):
            layers += [nn.Linear(in_dim if k == 0 else hidden, hidden), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.reshape(x.shape[0], -1))[:, 0]


@dataclass
class GANTrainResult:
    """Outcome of :func:`train_gan` / :func:`train_imle`: the generator, the discriminator (None
    for IMLE) and the losses per step.

    ``losses`` has shape ``(steps, 2)`` for a GAN (discriminator loss, generator loss) and
    ``(steps, 1)`` for IMLE.
    """

    generator: MLPDecoder
    discriminator: nn.Module | None
    losses: np.ndarray
    elapsed_s: float
    settings: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the generator as a ``kind="generator"`` lidmem checkpoint (the discriminator is not saved)."""
        from .diffusion.checkpoint import save_checkpoint

        meta = {"training": self.settings, **(extra or {})}
        return save_checkpoint(path, self.generator, kind="generator", data_shape=self.generator.out_shape, extra=meta)


def train_gan(
    data: Any,
    *,
    latent_dim: int = 8,
    hidden: int = 256,
    depth: int = 2,
    disc_hidden: int = 256,
    disc_depth: int = 2,
    steps: int = 5000,
    batch_size: int = 128,
    lr: float = 2e-4,
    seed: int = 0,
    progress: bool | None = None,
) -> GANTrainResult:
    """Train an MLP GAN on ``data``; the generator is an :class:`MLPDecoder` ``z -> x``.

    Losses (non-saturating GAN): discriminator ``softplus(-D(x)) + softplus(D(G(z)))``, generator
    ``softplus(-D(G(z)))``, one Adam step each (``betas=(0.5, 0.999)``) per training step, ``z ~
    N(0, I)``, real minibatches drawn with replacement.

    Parameters
    ----------
    data : array-like of shape (n, c, h, w) or (n, d)
        Training images in [-1, 1] (the generator's ``tanh`` range).
    latent_dim, hidden, depth : int
        Generator sizes (:class:`MLPDecoder`).
    disc_hidden, disc_depth : int
        Discriminator MLP sizes (LeakyReLU 0.2).
    steps, batch_size : int
    lr : float, default=2e-4
    seed : int, default=0
        Seeds the initial weights, the minibatches and the latents; the run is deterministic on
        one CPU thread.

    Returns
    -------
    GANTrainResult
    """
    x_all = check_points(data, "data", min_samples=2, min_ndim=2).to(torch.float32)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive float")
    gen = make_generator(seed)
    with torch.random.fork_rng(devices=[]):  # seeded weight init without touching the global RNG
        torch.manual_seed(int(seed))
        g_net = MLPDecoder(latent_dim, tuple(x_all.shape[1:]), hidden=hidden, depth=depth)
        d_net = _Discriminator(math.prod(x_all.shape[1:]), check_positive_int(disc_hidden, "disc_hidden"),
                               check_positive_int(disc_depth, "disc_depth"))
    opt_g = torch.optim.Adam(g_net.parameters(), lr=float(lr), betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=float(lr), betas=(0.5, 0.999))
    softplus = nn.functional.softplus
    losses = np.empty((steps, 2))
    start = time.perf_counter()
    for step in _progress(range(steps), total=steps, desc="training GAN", disable=None if progress is None else not progress):
        x = x_all[torch.randint(len(x_all), (batch_size,), generator=gen)]
        z = torch.randn((batch_size, latent_dim), generator=gen)
        fake = g_net(z)
        loss_d = (softplus(-d_net(x)) + softplus(d_net(fake.detach()))).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = softplus(-d_net(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses[step] = (loss_d.item(), loss_g.item())
    g_net.eval()
    d_net.eval()
    settings = {"model": "gan", "latent_dim": latent_dim, "hidden": hidden, "depth": depth, "disc_hidden": disc_hidden,
                "disc_depth": disc_depth, "steps": steps, "batch_size": batch_size, "lr": float(lr), "seed": int(seed)}
    return GANTrainResult(g_net, d_net, losses, time.perf_counter() - start, settings)


def train_imle(
    data: Any,
    *,
    latent_dim: int = 8,
    hidden: int = 256,
    depth: int = 2,
    steps: int = 15000,
    batch_size: int = 64,
    n_candidates: int = 256,
    n_pulled: int = 1,
    reverse_weight: float = 0.0,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool | None = None,
) -> GANTrainResult:
    """Train an :class:`MLPDecoder` by implicit maximum likelihood estimation (IMLE; Li & Malik, 2018).

    Each step draws ``batch_size`` training images ``x_i`` and ``n_candidates`` samples
    ``G(z_j)``, ``z_j ~ N(0, I)``, and minimises the mean of ``||x_i - G(z_j)||^2`` over the
    ``n_pulled`` nearest samples ``j`` of each ``x_i`` (the selection is not differentiated;
    ``n_pulled=1`` is IMLE's ``min_j``); with ``reverse_weight > 0`` it adds ``reverse_weight``
    times the mean over samples of ``min_i ||G(z_j) - x_i||^2`` (each sample pulled to its nearest
    image of the minibatch: the two terms together are the Chamfer distance between the batches).
    An image that appears often in the data is in most minibatches, so the samples around it are
    pulled onto it at every step: the generator collapses there (a flat ``G``, low Jacobian
    rank), while samples near an image seen once are pulled towards changing neighbours. Every training image pulls its nearest sample towards itself, so an image
    that appears many times in ``data`` pulls a whole region of latent space onto itself: the
    generator reproduces it and its Jacobian is nearly zero there (memorization of duplicates).

    Parameters
    ----------
    data : array-like of shape (n, c, h, w) or (n, d)
        Training images in [-1, 1].
    latent_dim, hidden, depth : int
        Generator sizes (:class:`MLPDecoder`).
    steps, batch_size, n_candidates, n_pulled : int
    reverse_weight : float, default=0.0
    lr : float, default=1e-3
        Adam learning rate (constant; a cosine decay to 0 was measured to reproduce fewer planted
        digits, see docs/audit.md).
    seed : int, default=0
        Seeds the initial weights, the minibatches and the latents; deterministic on one CPU thread.

    Returns
    -------
    GANTrainResult
        ``discriminator`` is None; ``losses`` has shape ``(steps, 1)``.
    """
    x_all = check_points(data, "data", min_samples=2, min_ndim=2).to(torch.float32)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    n_candidates = check_positive_int(n_candidates, "n_candidates")
    n_pulled = check_positive_int(n_pulled, "n_pulled")
    if not (isinstance(reverse_weight, (int, float)) and reverse_weight >= 0 and math.isfinite(reverse_weight)):
        raise ValueError(f"reverse_weight={reverse_weight!r} must be a finite float >= 0")
    if n_pulled > n_candidates:
        raise ValueError(f"n_pulled={n_pulled} must be <= n_candidates={n_candidates}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr={lr!r} must be a positive float")
    gen = make_generator(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        g_net = MLPDecoder(latent_dim, tuple(x_all.shape[1:]), hidden=hidden, depth=depth)
    opt = torch.optim.Adam(g_net.parameters(), lr=float(lr))
    flat = x_all.reshape(len(x_all), -1)
    losses = np.empty((steps, 1))
    start = time.perf_counter()
    for step in _progress(range(steps), total=steps, desc="training IMLE", disable=None if progress is None else not progress):
        x = flat[torch.randint(len(flat), (batch_size,), generator=gen)]
        fake = g_net(torch.randn((n_candidates, latent_dim), generator=gen)).reshape(n_candidates, -1)
        with torch.no_grad():
            dist = torch.cdist(x, fake)
            nearest = dist.topk(n_pulled, dim=1, largest=False).indices  # (batch, n_pulled)
        loss = ((fake[nearest] - x[:, None]) ** 2).sum(dim=2).mean()
        if reverse_weight > 0:  # each sample pulled to its nearest image of the minibatch
            loss = loss + reverse_weight * ((fake - x[dist.argmin(dim=0)]) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step, 0] = loss.item()
    g_net.eval()
    settings = {"model": "imle", "latent_dim": latent_dim, "hidden": hidden, "depth": depth, "steps": steps,
                "batch_size": batch_size, "n_candidates": n_candidates, "n_pulled": n_pulled, "reverse_weight": float(reverse_weight), "lr": float(lr), "seed": int(seed)}
    return GANTrainResult(g_net, None, losses, time.perf_counter() - start, settings)


def load_generator(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a ``kind="generator"`` checkpoint (ValueError naming both kinds for any other kind).

    The metadata is available as ``generator.metadata``.
    """
    from .diffusion.checkpoint import load_network

    net, meta = load_network(path, expected_kind="generator", device=device)
    net.metadata = meta
    return net


def sample_generator(generator: nn.Module, n: int, *, seed: int = 0, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``z ~ N(0, I)`` (shape ``(n, latent_dim)``) and return ``(G(z), z)``."""
    n = check_positive_int(n, "n")
    batch_size = check_positive_int(batch_size, "batch_size")
    latent_dim = getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise TypeError(f"{type(generator).__name__} has no latent_dim attribute; lidmem generators expose one")
    z = torch.randn(n, latent_dim, generator=make_generator(seed))
    with torch.no_grad():
        x = torch.cat([generator(z[sl]) for sl in chunk_slices(n, batch_size)])
    return x, z
