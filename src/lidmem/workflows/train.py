"""Train lidmem's image UNet (pixel space) on a user's images: the library side of ``lidmem train``.

:func:`read_training_images` reads the data the same way ``lidmem audit --train`` does (a folder
of images, a ``.npy`` ``(n, c, h, w)`` in [-1, 1], ``"digits"``) plus Parquet shards and
Hugging Face data sets on disk (:func:`lidmem.scoring.sources.open_source`). :func:`train_defaults`
picks the network and schedule from the image side ``s`` (images must be square):

========== ======================= ======= ====== ====== ==============================
side s     block_out_channels      steps   batch  lr     note
========== ======================= ======= ====== ====== ==============================
s <= 8     (32, 64)                4,000   128    1e-3   the shipped digits UNet's recipe
s <= 16    (32, 64)                4,000   128    1e-3   v-prediction (as every s > 8)
s <= 32    (32, 64, 64)            20,000  64     2e-4
s <= 64    (32, 64, 128, 128)      50,000  32     2e-4   a GPU job
s > 64     (64, 128, 256, 256)     100,000 16     1e-4   a GPU job
========== ======================= ======= ====== ====== ==============================

Levels are dropped from the end until ``s`` is divisible by ``2 ** (levels - 1)``. Everything
else is :func:`lidmem.diffusion.training.train_score_model`'s: VP-SDE, epsilon prediction for
s <= 8 and v-prediction above (docs/train_presets.md), EMA
0.999, half of each batch's times log-uniform, resumable checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["TrainDefaults", "TRAIN_PRESETS", "train_defaults", "train_settings", "read_training_images", "train_image_model", "monitor_log_path", "sample_grid_png", "check_sample_grid", "write_image_grid"]


@dataclass(frozen=True)
class TrainDefaults:
    """Defaults of ``lidmem train`` for one image side or preset (see the module docstring)."""

    block_out_channels: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    prediction: str = "epsilon"
    log_uniform_fraction: float = 0.5
    ema_decay: float = 0.999


def train_defaults(side: int) -> TrainDefaults:
    """The default network and schedule for square images of side ``side``."""
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"side must be a positive int; got {side!r}")
    if side <= 16:
        d = TrainDefaults((32, 64), 4000, 128, 1e-3)
    elif side <= 32:
        d = TrainDefaults((32, 64, 64), 20000, 64, 2e-4)
    elif side <= 64:
        d = TrainDefaults((32, 64, 128, 128), 50000, 32, 2e-4)
    else:
        d = TrainDefaults((64, 128, 256, 256), 100000, 16, 1e-4)
    channels = d.block_out_channels
    while len(channels) > 1 and side % 2 ** (len(channels) - 1):
        channels = channels[:-1]
    # v-prediction above 8x8: epsilon's x0 estimate amplifies its error by sigma/psi (~150 at t = 1),
    # which puts photo samples out of range (docs/train_presets.md); 8x8 digits keep the shipped recipe
    return TrainDefaults(channels, d.steps, d.batch_size, d.lr, prediction="epsilon" if side <= 8 else "v")


#: Named recipes of ``lidmem train --preset``, measured by ``benchmarks/train_presets.py`` (photo16: 98%
#: of the grid in range in 8.6 CPU-min; photo32: only 47% in range after its 1,200 steps, 23.8 CPU-min)
#: (docs/train_presets.md has the table). Fields not given by a preset come from :func:`train_defaults`.
TRAIN_PRESETS: dict[str, TrainDefaults] = {
    "photo16": TrainDefaults((32, 64), 1800, 64, 1e-3, prediction="v"),
    "photo32": TrainDefaults((32, 64, 64), 1200, 64, 1e-3, prediction="v"),
}


def train_settings(side: int, preset: str | None = None) -> TrainDefaults:
    """The recipe ``lidmem train`` uses: :data:`TRAIN_PRESETS` ``[preset]`` or, for ``None``,
    :func:`train_defaults` ``(side)``. A preset's channels are cut to levels ``side`` allows."""
    d = train_defaults(side)
    if preset is None:
        return d
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"preset={preset!r} is not known; choose one of {', '.join(map(repr, TRAIN_PRESETS))} (or none)")
    p = TRAIN_PRESETS[preset]
    channels = p.block_out_channels
    while len(channels) > 1 and side % 2 ** (len(channels) - 1):
        channels = channels[:-1]
    return TrainDefaults(channels, p.steps, p.batch_size, p.lr, p.prediction, p.log_uniform_fraction, p.ema_decay)


def read_training_images(data: str | Path, *, column: str | None = None, mode: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Images ``(n, c, s, s)`` float32 in [-1, 1] and a description of where they came from.

    ``"digits"``, a folder of images and a ``.npy`` go through
    :func:`lidmem.data.audit_inputs.load_training_images` (what ``lidmem audit --train`` reads);
    Parquet files / folders and ``save_to_disk`` folders through
    :func:`lidmem.scoring.sources.open_source` (images in [0, 1] mapped to [-1, 1]).
    """
    from ..data.audit_inputs import load_training_images
    from ..scoring.sources import open_source

    s = str(data)
    path = Path(s)
    kind = None
    if path.is_dir() and ((path / "state.json").is_file() or any(path.glob("*.parquet"))):
        kind = "hf" if (path / "state.json").is_file() else "parquet"
    elif path.suffix.lower() == ".parquet" or any(ch in s for ch in "*?["):
        kind = "parquet"
    if kind is None:
        if column is not None:
            raise ValueError("--column applies to Parquet and Hugging Face data only")
        tr = load_training_images(data)
        images, desc = np.asarray(tr.images, dtype=np.float32), dict(tr.description)
    else:
        src = open_source(s, kind=kind, column=column, mode=mode)
        rows = src.read(0, len(src))
        if not rows.is_image or rows.data.ndim != 4:
            raise ValueError(f"{s} holds arrays of shape {rows.data.shape[1:]}, not images; lidmem train needs images (n, c, s, s)")
        images, desc = (2.0 * rows.data - 1.0).astype(np.float32), {"source": s, "kind": kind}
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"lidmem train needs square images (n, c, s, s); {s} holds shape {images.shape[1:]}; crop or resize them first")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels; {s} has {images.shape[1]}")
    if len(images) < 2:
        raise ValueError(f"{s} holds {len(images)} image(s); training needs at least 2")
    desc.update(n=int(len(images)), shape=list(images.shape[1:]), value_range=[-1.0, 1.0])
    return images, desc


def train_image_model(
    images: np.ndarray,
    out: str | Path,
    *,
    preset: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    block_out_channels: tuple[int, ...] | None = None,
    ema_decay: float | None = None,
    prediction: str | None = None,
    log_uniform_fraction: float | None = None,
    checkpoint_every: int = 1000,
    resume: bool = True,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
    monitor_every: int | None = None,
    monitor_probes: int | None = None,
    stop_when_memorizing: bool = False,
    callback: Callable[[int, torch.nn.Module, torch.nn.Module], str | None] | None = None,
) -> Any:
    """Train :class:`lidmem.diffusion.unet.UNetScoreNet` (VP-SDE) on ``images`` and write
    the EMA checkpoint ``out`` (+ its resumable training state). Returns the ``TrainResult``.

    ``None`` arguments take :func:`train_settings` ``(side, preset)``: the image side's defaults
    (:func:`train_defaults`) or those of a named preset (:data:`TRAIN_PRESETS`). Initial weights
    are drawn under ``seed``, so a rerun of the same call (after Ctrl-C) resumes to bit-identical
    weights.

    ``monitor_every=N`` watches the EMA weights with :class:`lidmem.monitor.MemorizationMonitor`
    every N steps (``monitor_probes`` distinct training images, default
    :data:`lidmem.monitor.DEFAULT_PROBE_IMAGES`: every duplicated image, then images drawn under ``seed``; t0 from the
    training data) and writes its log to :func:`monitor_log_path` ``(out)``; the signal goes to the
    progress bar. ``stop_when_memorizing`` stops at the first alarm; the checkpoint then holds the
    last periodic save before it (``TrainResult.stopped_at`` is the alarm's step).

    ``callback(step, net, ema)`` (optional) runs after every step, after the monitor's scoring
    (e.g. to sample or save the EMA weights at chosen steps); what it returns (a string or None)
    is appended to the progress note; it may raise ``StopTraining`` like the monitor.
    """
    from ..diffusion.sde import VPSDE
    from ..diffusion.training import train_score_model
    from ..diffusion.unet import UNetScoreNet

    images = np.asarray(images, dtype=np.float32)
    side = int(images.shape[-1])
    d = train_settings(side, preset)
    channels = tuple(block_out_channels) if block_out_channels else d.block_out_channels
    groups = 8 if all(c % 8 == 0 for c in channels) else 1
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(int(seed))
        net = UNetScoreNet(side, in_channels=int(images.shape[1]), block_out_channels=channels, norm_num_groups=groups)
    if device is not None:
        net = net.to(device)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(step, net, ema) -> str | None; got {type(callback).__name__}")
    monitor = None
    if monitor_every is not None:
        from ..monitor import DEFAULT_PROBE_IMAGES

        n_watch = DEFAULT_PROBE_IMAGES if monitor_probes is None else monitor_probes
        monitor = _monitor_callback(images, out, int(monitor_every), n_watch, bool(stop_when_memorizing), int(seed), resume,
                                    d.prediction if prediction is None else prediction)
    elif stop_when_memorizing:
        raise ValueError("stop_when_memorizing needs monitor_every (e.g. monitor_every=250)")
    callback = _chain_callbacks(monitor, callback)
    return train_score_model(
        net, images, VPSDE(), prediction=d.prediction if prediction is None else prediction,
        steps=d.steps if steps is None else steps, batch_size=d.batch_size if batch_size is None else batch_size,
        lr=d.lr if lr is None else lr, ema_decay=d.ema_decay if ema_decay is None else ema_decay, seed=seed,
        log_uniform_fraction=d.log_uniform_fraction if log_uniform_fraction is None else log_uniform_fraction,
        checkpoint=out, checkpoint_every=checkpoint_every, resume=resume,
        extra={"data_range": [-1.0, 1.0], "trained_by": "lidmem train", **({"preset": preset} if preset else {}), **(extra or {})},
        progress=progress, device=device, callback=callback,
    )


def _chain_callbacks(*callbacks: Any) -> Any:
    """One ``callback(step, net, ema)`` running the given ones (None skipped) in order; their notes joined."""
    chain = [c for c in callbacks if c is not None]
    if len(chain) <= 1:
        return chain[0] if chain else None

    def callback(step: int, net: torch.nn.Module, ema: torch.nn.Module) -> str | None:
        notes = [n for n in (c(step, net, ema) for c in chain) if n]
        return " ".join(notes) if notes else None

    return callback


def monitor_log_path(out: str | Path) -> Path:
    """Where ``lidmem train --monitor-every`` writes the monitor's log: ``<out>.monitor.parquet``."""
    return Path(out).with_suffix(".monitor.parquet")


def _monitor_callback(images: np.ndarray, out: str | Path, every: int, n_probes: int, stop: bool, seed: int, resume: bool,
                      prediction: str = "epsilon") -> Any:
    """``callback(step, net, ema)`` for :func:`train_score_model`: the monitor on the EMA weights."""
    from .._validation import check_positive_int
    from ..diffusion.score import ScoreModel
    from ..diffusion.sde import VPSDE
    from ..diffusion.training import StopTraining
    from ..monitor import MemorizationMonitor, choose_probe_images

    every = check_positive_int(every, "monitor_every")
    n_probes = check_positive_int(n_probes, "monitor_probes", minimum=2)
    ids = choose_probe_images(images, n_probes, seed)  # duplicated images first, then random distinct ones
    state: dict[str, Any] = {}

    def callback(step: int, net: torch.nn.Module, ema: torch.nn.Module) -> str | None:
        if step % every:
            return None
        if "monitor" not in state:
            model = ScoreModel(ema, VPSDE(), prediction=prediction)
            state["monitor"] = MemorizationMonitor(model, images[ids], train_data=images, every=every, image_ids=ids.tolist(),
                                                   log=monitor_log_path(out), seed=seed, resume=resume)
        summary = state["monitor"].score(step)
        if stop and summary.memorizing:
            raise StopTraining(f"memorization signal {summary.signal:.3f} at step {step}")
        return summary.describe()

    return callback


def sample_grid_png(model: Any, shape: tuple[int, ...], path: str | Path, *, n: int = 64, steps: int = 50, seed: int = 0) -> Path:
    """Sample ``n`` images (probability-flow ODE, Heun, Tweedie-denoised) and write a square PNG grid."""
    return check_sample_grid(model, shape, path, n=n, steps=steps, seed=seed)["png"]


def check_sample_grid(model: Any, shape: tuple[int, ...], path: str | Path, *, n: int = 64, steps: int = 50, seed: int = 0) -> dict[str, Any]:
    """The sample grid of :func:`sample_grid_png` and the share of its samples inside the data range.

    Returns
    -------
    dict
        ``png`` (the grid's path) and ``in_range``
        (:func:`lidmem.memorization.reliability.in_range_fraction` of the unclipped samples
        against [-1, 1]; the grid shows them clipped). Below
        :data:`~lidmem.memorization.reliability.IN_RANGE_TARGET` the model is too weak to audit.
    """
    from ..diffusion.sampling import sample_ode
    from ..memorization.reliability import in_range_fraction

    with torch.no_grad():
        x = sample_ode(model, (n, *shape), steps=steps, denoise=True, seed=seed, progress=False)
    return {"png": write_image_grid(x, path), "in_range": in_range_fraction(x)}


def write_image_grid(x: torch.Tensor, path: str | Path) -> Path:
    """Images ``x`` (n, c, h, w) in [-1, 1] (clipped) as a square PNG grid at ``path``."""
    from PIL import Image

    n = len(x)
    imgs = ((x.clamp(-1, 1).cpu().numpy() + 1.0) * 127.5).round().astype(np.uint8)  # (n, c, h, w)
    c, h, w = imgs.shape[1:]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.uint8)
    for i, im in enumerate(imgs):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = im.transpose(1, 2, 0)
    scale = max(1, 256 // max(grid.shape[:2]))
    pic = Image.fromarray(grid[..., 0] if c == 1 else grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST)
    path = Path(path)
    pic.save(path)
    return path
