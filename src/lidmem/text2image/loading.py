"""Loading a text-to-image model: :func:`load_text2image` builds a
:class:`~lidmem.text2image.adapters.TextToImageModel` from a diffusers pipeline folder or a
Hugging Face id (``local_files_only=True`` by default: no network) with its components on one
device and dtype.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .._validation import check_device, parse_json_text
from .adapters import TextToImageModel

__all__ = ["load_text2image"]


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def load_text2image(
    path_or_id: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool = True,
    prediction: str | None = None,
) -> TextToImageModel:
    """Load a diffusers text-to-image model (folder layout ``unet/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``, optional ``vae/``) with ``from_pretrained``.

    Parameters
    ----------
    path_or_id : str or Path
        A local folder (a saved ``StableDiffusionPipeline`` or a lidmem text-to-image
        checkpoint), or a Hugging Face hub id (needs ``local_files_only=False`` and network,
        or the files already in the local hub cache).
    device : str or torch.device, optional
        Default ``"cpu"``.
    dtype : torch.dtype or {"float32", "float16", "bfloat16"}, optional
        Default float16 on CUDA, float32 otherwise.
    local_files_only : bool, default=True
        Never download unless set to False.
    prediction : {"epsilon", "v", "x0"}, optional
        Overrides the scheduler's ``prediction_type``.

    Returns
    -------
    TextToImageModel
        In eval mode, on ``device``, in ``dtype``.
    """
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    dev = check_device(device) if device is not None else torch.device("cpu")
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in names:
            raise ValueError(f"dtype={dtype!r} is not supported; choose one of {sorted(names)}")
        dtype = names[dtype]
    dt = dtype if dtype is not None else _default_dtype(dev)
    if dev.type == "cpu" and dt == torch.float16:
        raise ValueError("dtype=float16 is not supported on the CPU; use float32 (or bfloat16)")
    src = str(path_or_id)
    local = Path(src)
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"path_or_id={src!r} is a file; pass the model folder holding unet/, text_encoder/, tokenizer/, scheduler/")
        missing = [s for s in ("unet", "text_encoder", "tokenizer", "scheduler") if not (local / s).is_dir()]
        if missing:
            raise ValueError(f"{src!r} lacks the diffusers subfolders {missing}; expected unet/, text_encoder/, tokenizer/, scheduler/ (vae/ optional)")
    elif local_files_only and (src.startswith((".", "/", "~")) or src.count("/") != 1):
        raise FileNotFoundError(f"model folder {src!r} does not exist")
    kw: dict[str, Any] = {"local_files_only": local_files_only}
    from ..utils import held_library_warnings

    if local.exists():
        check_scheduler_class(local, src)
    with held_library_warnings(), _quiet_loading():  # a failed load: its error alone, no library warnings first
        return _load_parts(src, local, dt, dev, kw, prediction)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' / diffusers' "Loading weights" progress bars and info logs while a
    model loads (they printed on every ``lidmem t2i`` call); restores the previous settings."""
    import diffusers
    import transformers

    t_log, d_log = transformers.utils.logging, diffusers.utils.logging
    t_bar, d_bar = t_log.is_progress_bar_enabled(), d_log.is_progress_bar_enabled()
    t_level, d_level = t_log.get_verbosity(), d_log.get_verbosity()
    t_log.disable_progress_bar()
    d_log.disable_progress_bar()
    t_log.set_verbosity_error()
    d_log.set_verbosity_error()
    try:
        yield
    finally:
        t_log.set_verbosity(t_level)
        d_log.set_verbosity(d_level)
        if t_bar:
            t_log.enable_progress_bar()
        if d_bar:
            d_log.enable_progress_bar()


def _load_parts(src: str, local: Path, dt: torch.dtype, dev: torch.device, kw: dict[str, Any], prediction: Any) -> "TextToImageModel":
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=dt, **kw)
    arch = None
    te_cfg = local / "text_encoder" / "config.json"
    if te_cfg.is_file():
        archs = parse_json_text(te_cfg.read_bytes(), str(te_cfg)).get("architectures") or []
        arch = archs[0] if archs else None
    te_cls = getattr(transformers, arch, None) if arch else None
    if te_cls is None:
        te_cls = transformers.AutoModel
    text_encoder = te_cls.from_pretrained(src, subfolder="text_encoder", torch_dtype=dt, **kw)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
    scheduler = DDIMScheduler.from_pretrained(src, subfolder="scheduler", **kw)
    vae = None
    has_vae = (local / "vae").is_dir() if local.exists() else True
    if has_vae:
        try:
            vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=dt, **kw)
        except (OSError, EnvironmentError):
            if local.exists():
                raise
            vae = None
    model = TextToImageModel(unet, text_encoder, tokenizer, scheduler, vae, prediction=prediction)
    model.to(device=dev)
    model.eval()
    return model


def check_scheduler_class(folder: str | Path, ref: str | None = None) -> str | None:
    """The ``_class_name`` of ``folder/scheduler/scheduler_config.json`` when that file exists
    (None otherwise, e.g. a hub id); a name that is not a diffusers scheduler class is a
    ValueError naming the folder and the class (it would otherwise load as another scheduler)."""
    import diffusers

    cfg_file = Path(folder) / "scheduler" / "scheduler_config.json"
    if not cfg_file.is_file():
        return None
    name = parse_json_text(cfg_file.read_bytes(), str(cfg_file)).get("_class_name")
    cls = getattr(diffusers, str(name), None) if isinstance(name, str) else None
    base = getattr(diffusers, "SchedulerMixin", None)
    if not (isinstance(cls, type) and (base is None or issubclass(cls, base))):
        raise ValueError(f"model folder {str(ref or folder)!r}: {cfg_file.relative_to(Path(folder))} names the scheduler class {name!r}, "
                         "which is not a diffusers scheduler; use e.g. DDIMScheduler, DDPMScheduler or PNDMScheduler")
    return name
