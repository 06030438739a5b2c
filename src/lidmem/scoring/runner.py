"""Streaming, resumable batch scoring of a data source into per-shard Parquet files.

Output folder layout::

    OUT/settings.json                  # the run's settings (compared on every rerun) + info
    OUT/shards/part-000000.parquet     # one file per input shard: rows [i*S, (i+1)*S)
    OUT/shards/part-000001.parquet
    ...
    OUT/scores.parquet                 # the union of all shards in row order (merge_shards)

Each shard file has the columns ``row`` (int64, global row index), ``id`` (string) and one
column per metric, and carries the settings in its Parquet key-value metadata (key ``lidmem``).
A shard file appears only by an atomic rename of a finished temporary file, so a killed run
never leaves a partial shard that a rerun would count as done; a rerun skips the shards whose
file exists and refuses (ValueError) to continue a folder written with different settings.

Randomness (Hutchinson probes, normal-bundle noise) is seeded per batch from the global index
of the batch's first row (and the metric name), never from the order in which batches happen
to run. Batches are fixed slices of shards (``batch_size`` rows from each shard's start), so a
resumed run, a run split over any number of workers and an uninterrupted run score exactly
the same rows with exactly the same random numbers: their outputs are identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import ArgumentError, check_choice, check_device, check_output_path, check_positive_int, check_t0, renamed_argument
from ..defaults import CFG_T0, EULER_STEPS, FLIPD_T0, NB_T0, NB_THRESHOLD
from ..estimators._rank import check_threshold
from ..utils import progress as _progress
from ..utils import resolve_device
from .metrics import METRICS, Metric, MetricParams, metric_names, register_metric
from .output import (_FORMAT, OutputLockedError, SettingsMismatchError, _claim_settings, _clean_stale_temps, _is_done, _lock_output, _part_path,
                     _remove_if_empty, _settings_hash, _write_part, merge_shards, read_settings)
from .sources import DataSource, Rows, Shard, open_source

__all__ = [
    "Metric",
    "MetricParams",
    "METRICS",
    "register_metric",
    "metric_names",
    "ScoreResult",
    "score_dataset",
    "merge_shards",
    "read_settings",
    "batch_seed",
    "PRECISIONS",
    "SettingsMismatchError",
    "OutputLockedError",
]

PRECISIONS = ("float32", "bfloat16", "float16")


def _recorded_nb_tau(out: Path, params: MetricParams) -> float | None:
    """``nb_tau`` of the run already in ``out`` when its other metric settings equal ``params``."""
    try:
        recorded = read_settings(out)["settings"]["params"]
    except (ValueError, KeyError, OSError, json.JSONDecodeError):
        return None
    mine = params.to_dict()
    same = all(recorded.get(k) == v for k, v in mine.items() if k != "nb_tau")
    tau = recorded.get("nb_tau")
    return float(tau) if same and isinstance(tau, (int, float)) else None


def _fit_nb_tau(model: Any, source: DataSource, data_shape: Any, encode: Any, params: MetricParams, batch_size: int, seed: int, dev: torch.device, autocast: Any) -> float:
    """The global percentile ``tau`` of the normal bundle from the data set's first batch."""
    from ..estimators._rank import percentile_threshold
    from ..estimators.normal_bundle import normal_bundle_singular_values

    rows = source.read(0, min(batch_size, len(source)))
    x = _to_model_input(rows, data_shape, params, dev)
    x = encode(x) if encode is not None else x
    with autocast:
        sv = normal_bundle_singular_values(model, x, params.nb_t0, n_scores=params.n_scores, seed=batch_seed(seed, 0, "nb"), progress=False)
    return percentile_threshold(sv[~torch.isnan(sv)].reshape(1, -1), 10.0)


def batch_seed(seed: int, row: int, metric: str) -> int:
    """Seed of the batch whose first global row is ``row`` for ``metric``: 63 bits of
    ``sha256(f"{seed}:{metric}:{row}")``. Independent of worker, batch order and resumption."""
    h = hashlib.sha256(f"{int(seed)}:{metric}:{int(row)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


@dataclass
class ScoreResult:
    """What :func:`score_dataset` did.

    Attributes
    ----------
    out : Path
        Output folder.
    settings : dict
        The compared settings of the run (as in ``settings.json``).
    n_shards : int
        Shards in the whole data set.
    shards_scored, shards_skipped : list of int
        Shards this worker scored now / found already done.
    rows_scored : int
        Rows scored by this call.
    seconds : float
        Wall time of the scoring loop.
    merged : Path or None
        The merged table, when this call wrote it.
    bad_rows : list of (row, id, reason)
        Rows skipped by this call because their image could not be decoded
        (``bad_images="skip"``); their metric values are null.
    """

    out: Path
    settings: dict[str, Any]
    n_shards: int
    shards_scored: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    rows_scored: int = 0
    seconds: float = 0.0
    merged: Path | None = None
    bad_rows: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else float("nan")


def _model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _describe_model(model: Any) -> dict[str, Any]:
    sde = getattr(model, "sde", None)
    meta = getattr(model, "metadata", None) or {}
    return {
        "fingerprint": _model_fingerprint(model) if isinstance(model, torch.nn.Module) else repr(model),
        "sde": sde.to_config() if sde is not None and hasattr(sde, "to_config") else None,
        "prediction": getattr(model, "prediction", None),
        "data_shape": meta.get("data_shape"),
    }


def _to_model_input(rows: Rows, data_shape: Sequence[int] | None, p: MetricParams, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(rows.data)
    if rows.is_image:
        lo, hi = p.value_range
        x = lo + (hi - lo) * x
    if data_shape is not None and tuple(x.shape[1:]) != tuple(data_shape):
        if math.prod(x.shape[1:]) != math.prod(data_shape):
            raise ValueError(
                f"the data has samples of shape {tuple(x.shape[1:])} but the model expects {tuple(data_shape)}; "
                "resize the images or pass shape= for array columns"
            )
        x = x.reshape(len(x), *data_shape)
    return x.to(device)


def score_dataset(
    model: Any,
    data: str | Path | DataSource,
    out: str | Path,
    *,
    metrics: Sequence[str] = ("flipd",),
    t0: float = FLIPD_T0,
    n_probes: int = 1,
    probe: str = "rademacher",
    nb_t0: float = NB_T0,
    n_scores: int | None = None,
    nb_threshold: str | float = NB_THRESHOLD,
    value_range: tuple[float, float] = (-1.0, 1.0),
    cfg_t0: float = CFG_T0,
    euler_steps: int = EULER_STEPS,
    shard_size: int = 1024,
    batch_size: int = 64,
    seed: int = 0,
    precision: str = "float32",
    device: str | torch.device | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    merge: bool | None = None,
    prefetch: bool = True,
    progress: bool | None = None,
    on_shard_done: Callable[[Shard, Path], None] | None = None,
    bad_images: str = "stop",
    nb_scores: int | None = None,
) -> ScoreResult:
    """Score every row of ``data`` with ``metrics`` and write per-shard Parquet files to ``out``.

    Resumable (a rerun skips finished shards), data-parallel (each of ``world_size`` workers
    takes shards ``i`` with ``i % world_size == rank``) and bounded in memory: only one batch of
    ``batch_size`` rows (plus one prefetched batch) is decoded at a time, whatever the data
    set's size.

    Parameters
    ----------
    model : ScoreModel, TextToImageModel, path or None
        A score model (``model(x, t)`` returns the score, with ``.sde``), or any model reference
        :func:`lidmem.models.load_model` reads (lidmem checkpoint, diffusers pixel / latent /
        text-to-image folder, ``package.module:factory``; latent models score encoded images);
        for ``cfg_norm``, a :class:`lidmem.text2image.adapters.TextToImageModel` or a text-to-image
        folder (its conditional model is used).
        None is allowed when every metric is model-free (``png_complexity``).
    data : str, Path or DataSource
        Anything :func:`lidmem.scoring.open_source` opens (folder, list file, Parquet, WebDataset
        tar, Hugging Face data set on disk).
    out : str or Path
        Output folder (created). See the module docstring for its layout.
    metrics : sequence of str, default=("flipd",)
        Names from :func:`metric_names`: ``flipd`` (exact trace), ``flipd_hutchinson``, ``nb``,
        ``png_complexity``, ``cfg_norm`` (text-to-image model and captions) and any registered
        with :func:`register_metric`.
    t0, n_probes, probe, nb_t0, n_scores, nb_threshold, value_range, cfg_t0, euler_steps
        Metric settings (see :class:`MetricParams`). Images are mapped from [0, 1] to
        ``value_range`` (default (-1, 1), lidmem's convention) before the model sees them.
    shard_size : int, default=1024
        Rows per output shard (the unit of resumption and of work distribution).
    batch_size : int, default=64
        Rows per model call; batch ``k`` of shard ``i`` is rows ``[i*shard_size + k*batch_size, ...)``.
        Both sizes are part of the settings: random metrics draw their numbers per batch.
    seed : int, default=0
        Base seed; each batch's seed is :func:`batch_seed` ``(seed, first_row, metric)``.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Autocast dtype for the model calls (mixed precision; use on GPU). Part of the settings.
    device : str or torch.device, optional
        Where the batches go. Default: the device of ``model``'s parameters when a module is
        given (the model is never moved nor switched to eval mode: do that yourself), else
        ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.
    rank, world_size : int, optional
        This worker's index and the number of workers. Default: from the environment
        (``RANK``/``WORLD_SIZE`` as set by ``torchrun`` and ``accelerate launch``), else 0 and 1.
    merge : bool or None, default=None
        Write ``OUT/scores.parquet`` after scoring. None: with one worker, merge; with several,
        rank 0 merges after a ``torch.distributed`` barrier when the launcher provides a
        rendezvous (``MASTER_ADDR``), otherwise nobody merges (run ``merge_shards`` /
        ``lidmem score --merge`` afterwards).
    prefetch : bool, default=True
        Decode the next batch in a background thread while the model runs.
    progress : bool or None, default=None
        Progress bar in rows (throughput and ETA); None shows it only on a terminal.
    on_shard_done : callable, optional
        ``on_shard_done(shard, path)`` after each shard is written (for monitoring; an exception
        raised there stops the run like a crash would, with the finished shards kept).
    bad_images : {"stop", "skip"}, default="stop"
        An image that cannot be decoded (not an image, truncated, an empty Parquet cell):
        ``"stop"`` raises ValueError naming the file / row (finished shards are kept; fix the file
        and rerun to resume); ``"skip"`` scores the rest, writes null metric values for the row
        and records ``(row, id, reason)`` in the shard's metadata, gathered into
        ``OUT/bad_rows.parquet`` by the merge. Not part of the compared settings.
    nb_scores : int or None
        Deprecated alias of ``n_scores``.

    Returns
    -------
    ScoreResult

    Raises
    ------
    SettingsMismatchError (a ValueError)
        If ``out`` holds a run made with other settings (model, data, metrics, seeds, sizes).
    ValueError, TypeError
        On invalid arguments, unknown metric names, data the model cannot take.
    """
    from . import distributed

    n_scores = renamed_argument(n_scores, nb_scores, new="n_scores", old="nb_scores", func="score_dataset")
    # --- plan: every cheap check first (arguments, model reference, data headers, output folder,
    # lock); the model is loaded last, so a bad input never costs a model load
    metrics, params = _check_metric_settings(metrics, t0=t0, n_probes=n_probes, probe=probe, nb_t0=nb_t0, n_scores=n_scores,
                                             nb_threshold=nb_threshold, value_range=value_range, cfg_t0=cfg_t0, euler_steps=euler_steps)
    shard_size = check_positive_int(shard_size, "shard_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive_int(seed, "seed", minimum=0)
    check_choice(precision, "precision", PRECISIONS)
    check_choice(bad_images, "bad_images", ("stop", "skip"))
    info = distributed.worker_info(rank=rank, world_size=world_size)
    if device is not None:
        dev = check_device(device, "device")
    elif isinstance(model, torch.nn.Module):
        dev = resolve_device(None, model)
    else:
        dev = distributed.default_device(info)
    needs_model, model_path = _check_model_reference(model, metrics)
    source = open_source(data)
    source.skip_bad_images = bad_images == "skip"
    shards = source.shards(shard_size)
    data_desc = source.describe()
    out = check_output_path(out, "out", kind="dir")
    created_out = not out.exists()
    (out / "shards").mkdir(parents=True, exist_ok=True)
    lock = _lock_output(out, info.rank, info.world_size)
    created_settings = False
    plan: _Plan | None = None
    result: ScoreResult | None = None
    try:
        if isinstance(model, (str, Path)):
            model = _load_model_reference(model, metrics, model_path, dev)
        if "nb" in metrics and params.nb_threshold == "percentile":
            # a resumed run (or a later worker) reuses the tau the folder records, so that float
            # noise across thread counts cannot make the settings differ; else fit it
            tau = _recorded_nb_tau(out, params)
            if tau is None:
                data_shape, encode, autocast = _model_input(model, dev, precision)
                tau = _fit_nb_tau(model, source, data_shape, encode, params, batch_size, seed, dev, autocast)
            params = replace(params, nb_tau=tau)
        settings = {
            "model": _describe_model(model) if needs_model else None,
            "data": {k: v for k, v in data_desc.items() if k not in ("path", "content")},
            "metrics": metrics,
            "params": params.to_dict(),
            "shard_size": shard_size,
            "batch_size": batch_size,
            "seed": int(seed),
            "precision": precision,
            "n_shards": len(shards),
        }
        from .._version import __version__

        doc = {
            "format": _FORMAT,
            "settings": settings,
            "info": {"model_path": model_path, "data_path": data_desc.get("path"), "bad_images": bad_images, "lidmem_version": __version__, "torch_version": torch.__version__},
        }
        created_settings = _claim_settings(out, doc)
        plan = _plan_shards(out, source, shards, settings, info)
        result = ScoreResult(out=out, settings=settings, n_shards=len(shards), shards_skipped=[sh.index for sh in plan.skipped])
        # --- score: shard by shard, one batch at a time
        _score_shards(plan, result, model, source, out, metrics=metrics, params=params, batch_size=batch_size, seed=seed,
                      precision=precision, dev=dev, info=info, prefetch=prefetch, progress=progress, on_shard_done=on_shard_done)
    except BaseException:
        # a run that fails before finishing any shard leaves nothing that would lock the folder
        wrote_any = plan is not None and bool(plan.skipped or (result is not None and result.shards_scored))
        if not wrote_any and info.world_size == 1:
            if created_settings and not any((out / "shards").glob("part-*.parquet")):
                (out / "settings.json").unlink(missing_ok=True)
            if created_out:
                _remove_if_empty(out, lock)
        raise
    finally:
        lock.release()

    # --- merge
    do_merge = merge
    if merge is None:
        do_merge = info.world_size == 1 or distributed.can_synchronize(info)
    if do_merge:
        if info.world_size > 1:
            distributed.barrier(info)
        if info.rank == 0:
            result.merged = merge_shards(out)
    return result


def _check_metric_settings(
    metrics: Sequence[str] | str, *, t0: float, n_probes: int, probe: str, nb_t0: float, n_scores: int | None,
    nb_threshold: str | float, value_range: tuple[float, float], cfg_t0: float, euler_steps: int,
) -> tuple[list[str], MetricParams]:
    """The metric names (a comma-separated string is split) and their checked :class:`MetricParams`."""
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = list(metrics)
    if not metrics:
        raise ValueError(f"metrics is empty; choose from {', '.join(metric_names())}")
    for m in metrics:
        check_choice(m, "metrics", metric_names())
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics={metrics} lists a metric twice")
    params = MetricParams(
        t0=check_t0(t0, "t0"),
        n_probes=check_positive_int(n_probes, "n_probes"),
        probe=check_choice(probe, "probe", ("rademacher", "gaussian")),
        nb_t0=check_t0(nb_t0, "nb_t0"),
        n_scores=None if n_scores is None else check_positive_int(n_scores, "n_scores"),
        nb_threshold=check_threshold(nb_threshold, "nb_threshold"),
        value_range=(float(value_range[0]), float(value_range[1])),
        cfg_t0=check_t0(cfg_t0, "cfg_t0"),
        euler_steps=check_positive_int(euler_steps, "euler_steps"),
    )
    if not params.value_range[1] > params.value_range[0]:
        raise ArgumentError(f"value_range={value_range} must be (low, high) with high > low, e.g. (-1, 1)", argument="value_range")
    return metrics, params


def _check_model_reference(model: Any, metrics: list[str]) -> tuple[bool, str | None]:
    """``(needs_model, model_path)``: whether a metric needs the model, and the reference to load
    (a resolved path or an entry point; None for a model object). Loads nothing."""
    needs_model = any(METRICS[m].needs_model for m in metrics)
    if needs_model and model is None:
        raise ArgumentError(f"model is required by the metrics {[m for m in metrics if METRICS[m].needs_model]} (a checkpoint path, a diffusers "
                            "folder or a ScoreModel); only png_complexity runs without one", argument="model")
    model_path = None
    if isinstance(model, (str, Path)):
        from ..models.loader import is_entry_point

        if not Path(model).exists() and not is_entry_point(model):
            raise ValueError(f"model {model} does not exist; give a lidmem checkpoint (.safetensors), a diffusers model folder or package.module:factory")
        model_path = str(Path(model).resolve()) if Path(model).exists() else str(model)
    elif model is not None:
        if not callable(model) or not hasattr(model, "sde"):
            raise TypeError(f"model must be a score model with an .sde (e.g. lidmem.ScoreModel) or a checkpoint path; got {type(model).__name__}")
    return needs_model, model_path


def _load_model_reference(model: str | Path, metrics: list[str], model_path: str | None, dev: torch.device) -> Any:
    """Load a model reference (checkpoint, diffusers folder, entry point) as the score model the metrics need."""
    from ..models import load_model

    loaded = load_model(model, device=dev)
    if loaded.info.kind != "score_model":
        raise ValueError(f"model {model_path} is a {loaded.info.kind}; lidmem score's metrics need a score model")
    if "cfg_norm" in metrics and hasattr(loaded, "text2image"):
        loaded = loaded.text2image  # cfg_norm needs the conditional text-to-image model
    return loaded


@dataclass
class _Plan:
    """This worker's shards: ``mine`` (assigned), ``todo`` (to score) and ``skipped`` (finished by
    an earlier run with the same settings and data), with the metadata every part file gets."""

    settings_hash: str
    part_meta: dict[str, Any]
    mine: list[Shard]
    todo: list[Shard]
    skipped: list[Shard]


def _plan_shards(out: Path, source: DataSource, shards: list[Shard], settings: dict[str, Any], info: Any) -> _Plan:
    from . import distributed

    shash = _settings_hash(settings)
    mine = [shards[i] for i in distributed.assign_shards(len(shards), info.rank, info.world_size)]
    todo, skipped = [], []
    for sh in mine:
        # temp files of dead writers of this worker's shards (we hold the lock of this rank)
        _clean_stale_temps(out / "shards", f"part-{sh.index:06d}.parquet.tmp-*")
        (skipped if _is_done(_part_path(out, sh), sh, shash, source.shard_fingerprint(sh.start, sh.stop)) else todo).append(sh)
    return _Plan(shash, {"settings_hash": shash, "settings": settings}, mine, todo, skipped)


def _model_input(model: Any, dev: torch.device, precision: str) -> tuple[Any, Any, Any]:
    """``(data_shape, encode, autocast)``: the shape rows are reshaped to, the encoder of a latent
    model (LID on latents; None otherwise) and the precision context of every metric call."""
    model_meta = (getattr(model, "metadata", None) or {}) if model is not None else {}
    data_shape = model_meta.get("image_shape") or model_meta.get("data_shape")
    encode = model.encode if model_meta.get("space") == "latent" and hasattr(model, "encode") else None
    autocast = torch.autocast(dev.type, dtype=getattr(torch, precision)) if precision != "float32" else nullcontext()
    return data_shape, encode, autocast


def _score_shards(
    plan: _Plan, result: ScoreResult, model: Any, source: DataSource, out: Path, *, metrics: list[str], params: MetricParams,
    batch_size: int, seed: int, precision: str, dev: torch.device, info: Any, prefetch: bool, progress: bool | None,
    on_shard_done: Callable[[Shard, Path], None] | None,
) -> None:
    """Score ``plan.todo`` batch by batch (the next batch decoded in a thread while the model
    runs) and write one part file per finished shard; fills ``result``."""
    data_shape, encode, autocast = _model_input(model, dev, precision)
    dtypes = {m: METRICS[m].dtype for m in metrics}
    todo = plan.todo
    batches = [(sh, s, min(s + batch_size, sh.stop)) for sh in todo for s in range(sh.start, sh.stop, batch_size)]
    desc = "score" if info.world_size == 1 else f"score [rank {info.rank}/{info.world_size}]"
    bar = _progress(None, total=sum(sh.size for sh in todo), desc=desc, disable=None if progress is None else not progress)
    bar.unit = "row"  # type: ignore[attr-defined]
    pool = ThreadPoolExecutor(max_workers=1) if prefetch else None
    start_time = time.perf_counter()
    try:
        pending = None
        cols: dict[str, list[Any]] = {}
        for bi, (sh, b0, b1) in enumerate(batches):
            if pending is not None:
                rows = pending.result()
            else:
                rows = source.read(b0, b1)
            pending = pool.submit(source.read, *batches[bi + 1][1:]) if pool is not None and bi + 1 < len(batches) else None
            if b0 == sh.start:
                cols = {"row": [], "id": [], "bad": [], **{m: [] for m in metrics}}
            x = _to_model_input(rows, data_shape, params, dev)
            x = encode(x) if encode is not None else x
            cols["row"].append(rows.rows)
            cols["id"].extend(rows.ids)
            cols["bad"].extend(rows.bad)
            for m in metrics:
                met = METRICS[m]
                with autocast:
                    val = met.compute(model, x, rows, batch_seed(seed, b0, m), params)
                val = val.detach().cpu().numpy() if isinstance(val, torch.Tensor) else np.asarray(val)
                if val.shape != (len(rows.rows),):
                    raise ValueError(f"metric {m!r} returned shape {val.shape} for a batch of {len(rows.rows)} rows; it must return shape (n,)")
                cols[m].append(val)
            bar.update(len(rows.rows))  # type: ignore[attr-defined]
            result.rows_scored += len(rows.rows)
            if b1 == sh.stop:
                path = _write_shard(out, sh, cols, metrics, dtypes, plan.part_meta, source, result)
                bar.set_postfix(shards=f"{len(plan.skipped) + len(result.shards_scored)}/{len(plan.mine)}")  # type: ignore[attr-defined]
                if on_shard_done is not None:
                    on_shard_done(sh, path)
    finally:
        result.seconds = time.perf_counter() - start_time
        bar.close()  # type: ignore[attr-defined]
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _write_shard(
    out: Path, sh: Shard, cols: dict[str, list[Any]], metrics: list[str], dtypes: dict[str, str], part_meta: dict[str, Any],
    source: DataSource, result: ScoreResult,
) -> Path:
    """Write one finished shard's part file (bad rows masked and listed in its metadata); record it in ``result``."""
    path = _part_path(out, sh)
    final = {"row": np.concatenate(cols["row"]), "id": cols["id"], **{m: np.concatenate(cols[m]) for m in metrics}}
    bad_rows = [list(b) for b in cols["bad"]]
    mask = np.isin(final["row"], [b[0] for b in bad_rows]) if bad_rows else None
    meta = {**part_meta, "shard": {"index": sh.index, "start": sh.start, "stop": sh.stop},
            "data_fingerprint": source.shard_fingerprint(sh.start, sh.stop), "bad_rows": bad_rows}
    _write_part(path, final, dtypes, meta, mask)
    result.bad_rows.extend((int(r), str(i), str(why)) for r, i, why in bad_rows)
    result.shards_scored.append(sh.index)
    return path
