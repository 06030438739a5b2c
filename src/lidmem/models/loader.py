"""One model reference, read in one place: :func:`load_model`.

Accepted references (tried in this order):

==================================== ===========================================================
reference                            what is loaded
==================================== ===========================================================
``model.safetensors`` (a file)       a lidmem checkpoint (``score_model`` or ``generator``)
a folder with ``unet/`` +            diffusers unconditional pixel pipeline (``DDPMPipeline``,
``scheduler/`` (UNet2DModel)         ``DDIMPipeline``); SDE = the scheduler's real alpha-bar table
... + ``vqvae/`` or ``vae/``         latent pipeline (``LDMPipeline``-style): score in latent space
... + ``text_encoder/`` +            text-to-image (Stable Diffusion layout, lidmem's shipped
``tokenizer/`` (UNet2DCondition)     toy model) used unconditionally with the empty prompt
``package.module:factory``           a Python entry point returning an :class:`EDMDenoiser`,
                                     :class:`ScoreNetwork` / ``ScoreModel`` or :class:`GeneratorSpec`
==================================== ===========================================================

``model_index.json`` is read when present but not required. Any other reference raises a
ValueError naming what was found and what was expected; files are never unpickled.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import ArgumentError, as_model_dtype, check_device
from ..diffusion.score import ScoreModel
from ..diffusion.sde import SDE, VESDE, DDPMSchedule
from .specs import EDMDenoiser, GeneratorSpec, ScoreNetwork
from ..text2image.loading import check_scheduler_class
from .wrappers import EDMFunction, EmptyPromptScoreModel, LatentScoreModel, LoadedGenerator, ModelInfo, UNet2DFunction, count_parameters, sde_summary

__all__ = ["load_model", "check_model_call", "model_info", "is_entry_point", "check_scheduler_class", "DIFFUSERS_PREDICTIONS"]

#: diffusers ``prediction_type`` -> lidmem prediction
DIFFUSERS_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
_ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_EXPECTED = ("a lidmem checkpoint (.safetensors), a diffusers pipeline folder (unet/ + scheduler/, optional vqvae/ or vae/, "
             "or the Stable Diffusion layout), or a Python entry point package.module:factory")
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def is_entry_point(ref: str | Path) -> bool:
    """True when ``ref`` reads as ``package.module:factory`` and is not an existing path."""
    s = str(ref)
    return bool(_ENTRY_RE.match(s)) and not Path(s).exists()


def model_info(model: Any) -> ModelInfo:
    """The :class:`ModelInfo` of a model returned by :func:`load_model` (TypeError otherwise)."""
    info = getattr(model, "info", None)
    if not isinstance(info, ModelInfo):
        raise TypeError(f"{type(model).__name__} was not returned by lidmem.models.load_model (no .info)")
    return info


def load_model(ref: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load any model reference lidmem understands (see the module docstring).

    Parameters
    ----------
    ref : str or Path
        Checkpoint file, diffusers folder or ``package.module:factory``.
    device : str or torch.device, default="cpu"
    dtype : torch.dtype, default=torch.float32
        Weights dtype of diffusers models (lidmem checkpoints keep theirs).

    Returns
    -------
    nn.Module
        A score model (:class:`~lidmem.diffusion.score.ScoreModel`; a
        :class:`~lidmem.models.LatentScoreModel` for latent models) or a generator ``G(z)``
        (``latent_dim``, ``z ~ N(0, I)``), in eval mode on ``device``, with ``.info``
        (:class:`ModelInfo`) and ``.metadata`` (``kind``, ``data_shape``, ``image_shape``, ...).

    Raises
    ------
    ValueError
        For a reference that is none of the accepted forms, a diffusers folder with missing
        parts, or a scheduler lidmem cannot map to an SDE (named).
    """
    if not isinstance(ref, (str, Path)):
        raise TypeError(f"model reference must be a path or 'package.module:factory'; got {type(ref).__name__}")
    dev = check_device(device)
    s = str(ref)
    from ..utils import held_library_warnings

    with held_library_warnings():  # a failed load shows its error alone (no diffusers / hub warnings first)
        if is_entry_point(s):
            return _load_entry_point(s, dev)
        path = Path(s).expanduser()
        if path.is_file():
            return _load_file(path, s, dev)
        if path.is_dir():
            return _load_folder(path, s, dev, dtype)
    if ":" in s:
        raise ValueError(f"model {s!r} is neither an existing path nor an entry point of the form package.module:factory")
    raise ValueError(f"model {s!r} does not exist; expected {_EXPECTED}")


# --- lidmem checkpoints ------------------------------------------------------------------------
def _load_file(path: Path, ref: str, dev: torch.device) -> nn.Module:
    from ..diffusion.checkpoint import load_network, load_score_model, read_metadata

    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ValueError(f"model {ref!r} is a {path.suffix} file (pickle-based); lidmem never unpickles files: expected {_EXPECTED}")
    if path.name in ("config.json", "model_index.json", "diffusion_pytorch_model.safetensors"):
        raise ValueError(f"model {ref!r} is one file of a diffusers model; pass the pipeline folder (with unet/ and scheduler/)")
    meta = read_metadata(path)  # ValueError: not safetensors / not a lidmem checkpoint
    kind = meta.get("kind")
    shape = tuple(int(v) for v in (meta.get("data_shape") or ()))
    stored = (meta.get("extra") or {}).get("data_range")
    vrange = tuple(float(v) for v in stored) if stored else ((-1.0, 1.0) if len(shape) == 3 else None)  # images: lidmem's [-1, 1]
    if kind == "score_model":
        model = load_score_model(path, device=dev)
        info = ModelInfo("score_model", "lidmem_checkpoint", ref, shape, shape, vrange, "pixel" if len(shape) == 3 else "vector", n_params=count_parameters(model),
                         sde=sde_summary(model.sde), prediction=model.prediction,
                         details={"network": meta.get("network", {}).get("type")})
        return _finish(model, info, meta)
    if kind == "generator":
        net, meta = load_network(path, expected_kind="generator", device=dev)
        latent_dim = getattr(net, "latent_dim", None)
        if latent_dim is None:
            raise ValueError(f"generator checkpoint {ref!r} holds a network without latent_dim; it cannot be sampled")
        info = ModelInfo("generator", "lidmem_checkpoint", ref, shape, shape, vrange, n_params=count_parameters(net),
                         latent=f"N(0, I), latent_dim={latent_dim}", details={"network": meta.get("network", {}).get("type")})
        return _finish(net, info, meta)
    hint = " (for a text-to-image model pass its diffusers folder)" if kind == "text2image" else ""
    raise ValueError(f"checkpoint {ref!r} holds a {kind!r} model (its metadata field 'kind'); expected a 'score_model' or 'generator' checkpoint{hint}")


def check_model_call(model: nn.Module, n: int = 2) -> str:
    """Call a loaded model once, as the estimators will, and check what it returns.

    A score model gets ``n`` points of its ``info.data_shape`` (uniform in [-1, 1]) at t = 0.5;
    a generator gets ``n`` latents ``z ~ N(0, I)``. The output must be a tensor of the input's
    shape (a score model) or of ``(n, *info.image_shape)`` (a generator), and finite. Returns a
    one-line description for ``lidmem inspect``; raises :class:`~lidmem._validation.ArgumentError`
    naming ``model`` with the failure (the model's own exception chained), so a factory whose
    network cannot run is refused before a long command.
    """
    info: ModelInfo = model.info
    g = torch.Generator().manual_seed(0)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    if info.kind == "generator":
        inp = as_model_dtype(torch.randn(n, int(model.latent_dim), generator=g), model).to(dev)
        what, want = f"{n} latents z of shape (n, {int(model.latent_dim)})", (n, *info.image_shape)
        args: tuple[Any, ...] = (inp,)
    else:
        inp = as_model_dtype(torch.rand((n, *info.data_shape), generator=g) * 2 - 1, model).to(dev)
        what, want = f"{n} points of shape {tuple(info.data_shape)} at t=0.5", tuple(inp.shape)
        args = (inp, torch.full((n,), 0.5, dtype=inp.dtype, device=dev))
    try:
        with torch.no_grad():
            out = model(*args)
    except Exception as exc:  # the user's network: any error it raises is the model's
        raise ArgumentError(f"calling the model on {what} failed: {type(exc).__name__}: {' '.join(str(exc).split())}", argument="model") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        raise ArgumentError(f"the model returned {getattr(out, 'shape', type(out).__name__)} for {what}; it must return shape {want}", argument="model")
    if not bool(torch.isfinite(out).all()):
        raise ArgumentError(f"the model returned NaN or infinite values for {what}", argument="model")
    return f"ok on {what} (finite, shape {'x'.join(map(str, want[1:]))})"


def _finish(model: nn.Module, info: ModelInfo, meta: dict[str, Any] | None = None) -> nn.Module:
    meta = dict(meta or {})
    meta.setdefault("kind", info.kind)
    meta["data_shape"] = list(info.data_shape) or None  # an old checkpoint may not know its shape
    meta["image_shape"] = list(info.image_shape) or None
    meta["value_range"] = list(info.value_range) if info.value_range is not None else None
    meta["space"] = info.space
    meta.setdefault("source", info.source)
    model.metadata = meta
    model.info = info
    return model.eval()


# --- diffusers folders -------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    from .._validation import parse_json_text

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    value = parse_json_text(raw, str(path))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, not an object")
    return value


def _load_folder(path: Path, ref: str, dev: torch.device, dtype: torch.dtype) -> nn.Module:
    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir())
    has = {name: (path / name).is_dir() for name in ("unet", "scheduler", "vqvae", "vae", "text_encoder", "tokenizer")}
    if not has["unet"]:
        if (path / "config.json").is_file():
            cls = _read_json(path / "config.json").get("_class_name", "a model")
            raise ValueError(f"folder {ref!r} holds a single {cls} (config.json) but no unet/ and scheduler/; "
                             "pass the folder of the whole pipeline (save_pretrained of the pipeline)")
        found = f"has {', '.join(f'{d}/' for d in subdirs)} but no unet/" if subdirs else "has no subfolders (no unet/)"
        raise ValueError(f"folder {ref!r} {found}; expected {_EXPECTED}")
    if not has["scheduler"]:
        raise ValueError(f"folder {ref!r} has unet/ but no scheduler/; a diffusers pipeline folder needs both (the scheduler's alpha-bar table defines the SDE)")
    if not (path / "unet" / "config.json").is_file():
        raise ValueError(f"folder {ref!r} has unet/ but unet/config.json is missing")
    unet_cls = _read_json(path / "unet" / "config.json").get("_class_name")
    index = _read_json(path / "model_index.json") if (path / "model_index.json").is_file() else {}
    pipeline = index.get("_class_name")
    if unet_cls == "UNet2DConditionModel" or has["text_encoder"]:
        missing = [d for d in ("text_encoder", "tokenizer") if not has[d]]
        if missing:
            raise ValueError(f"folder {ref!r} has a conditional UNet ({unet_cls}) but no {', '.join(d + '/' for d in missing)}; "
                             "expected the text-to-image layout unet/, text_encoder/, tokenizer/, scheduler/ (vae/ optional)")
        return _load_text2image(path, ref, dev, dtype, pipeline)
    if unet_cls not in (None, "UNet2DModel"):
        raise ValueError(f"folder {ref!r} has a {unet_cls} in unet/; lidmem loads UNet2DModel (unconditional) and UNet2DConditionModel (text-to-image)")
    return _load_unconditional(path, ref, dev, dtype, pipeline, has)


def _scheduler_sde(path: Path, ref: str) -> tuple[Any, DDPMSchedule, str]:
    import diffusers

    cfg_file = path / "scheduler" / "scheduler_config.json"
    if not cfg_file.is_file():
        raise ValueError(f"folder {ref!r} has scheduler/ but no scheduler/scheduler_config.json")
    cls_name = check_scheduler_class(path, ref)
    cls = getattr(diffusers, str(cls_name))
    scheduler = cls.from_pretrained(str(path), subfolder="scheduler")
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(
            f"scheduler {cls_name} in {ref!r} has no alpha-bar table, so lidmem cannot map it to an SDE; supported are the "
            "DDPM-family schedulers (DDPMScheduler, DDIMScheduler, PNDMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, ...)"
        )
    ptype = getattr(scheduler.config, "prediction_type", "epsilon")
    if ptype not in DIFFUSERS_PREDICTIONS:
        raise ValueError(f"scheduler prediction_type={ptype!r} in {ref!r} is not supported; expected one of {', '.join(DIFFUSERS_PREDICTIONS)}")
    return scheduler, DDPMSchedule.from_scheduler(scheduler), DIFFUSERS_PREDICTIONS[ptype]


def _load_unconditional(path: Path, ref: str, dev: torch.device, dtype: torch.dtype, pipeline: str | None, has: dict[str, bool]) -> nn.Module:
    from diffusers import UNet2DModel

    scheduler, sde, prediction = _scheduler_sde(path, ref)
    unet = UNet2DModel.from_pretrained(str(path), subfolder="unet", torch_dtype=dtype).to(dev).eval()
    if getattr(unet.config, "num_class_embeds", None) or getattr(unet.config, "class_embed_type", None):
        raise ValueError(f"the UNet in {ref!r} is class-conditional; lidmem audits unconditional UNet2DModel pipelines")
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(unet.config.in_channels), int(h), int(w))
    inner = ScoreModel(UNet2DFunction(unet), sde, prediction=prediction).eval()
    inner.scheduler_config = dict(scheduler.config)
    details = {"pipeline": pipeline or "(no model_index.json)", "unet": "UNet2DModel", "scheduler": type(scheduler).__name__,
               "diffusers_prediction_type": scheduler.config.prediction_type}
    ae_name = "vqvae" if has["vqvae"] else ("vae" if has["vae"] else None)
    if ae_name is None:
        info = ModelInfo("score_model", "diffusers_pixel", ref, shape, shape, n_params=count_parameters(unet),
                         sde=sde_summary(sde), prediction=prediction, details=details)
        return _finish(inner, info)
    ae, encode, decode, image_shape = _load_autoencoder(path, ae_name, ref, dev, dtype, shape)
    model = LatentScoreModel(inner, encode, decode, image_shape, [ae])
    model.scheduler_config = inner.scheduler_config
    details.update(autoencoder=f"{type(ae).__name__} ({ae_name}/), scaling_factor={ae.config.scaling_factor}")
    info = ModelInfo("score_model", "diffusers_latent", ref, shape, image_shape, space="latent", n_params=count_parameters(unet, ae),
                     sde=sde_summary(sde), prediction=prediction, details=details)
    return _finish(model, info)


def _load_autoencoder(path: Path, name: str, ref: str, dev: torch.device, dtype: torch.dtype, latent_shape: tuple[int, ...]) -> tuple[nn.Module, Any, Any, tuple[int, ...]]:
    import diffusers

    cfg = _read_json(path / name / "config.json") if (path / name / "config.json").is_file() else {}
    cls_name = cfg.get("_class_name") or ("VQModel" if name == "vqvae" else "AutoencoderKL")
    if cls_name not in ("VQModel", "AutoencoderKL"):
        raise ValueError(f"{name}/ in {ref!r} holds a {cls_name}; lidmem reads VQModel and AutoencoderKL autoencoders")
    ae = getattr(diffusers, cls_name).from_pretrained(str(path), subfolder=name, torch_dtype=dtype).to(dev).eval()
    scale = float(getattr(ae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(ae.config, "shift_factor", None) or 0.0)
    if int(ae.config.latent_channels) != latent_shape[0]:
        raise ValueError(f"{name}/ in {ref!r} has latent_channels={ae.config.latent_channels} but the UNet takes {latent_shape[0]} channels")
    f = 2 ** (len(ae.config.block_out_channels) - 1)
    image_shape = (int(ae.config.in_channels), latent_shape[1] * f, latent_shape[2] * f)

    if cls_name == "VQModel":
        def encode(x: torch.Tensor) -> torch.Tensor:
            return ae.encode(x.to(ae.dtype)).latents * scale  # pre-quantisation latents, as LDMPipeline's UNet saw them

        def decode(z: torch.Tensor) -> torch.Tensor:
            return ae.decode((z / scale).to(ae.dtype)).sample  # decode() quantises, as LDMPipeline does
    else:
        def encode(x: torch.Tensor) -> torch.Tensor:
            return (ae.encode(x.to(ae.dtype)).latent_dist.mean - shift) * scale

        def decode(z: torch.Tensor) -> torch.Tensor:
            return ae.decode((z / scale + shift).to(ae.dtype)).sample
    return ae, encode, decode, image_shape


def _load_text2image(path: Path, ref: str, dev: torch.device, dtype: torch.dtype, pipeline: str | None) -> nn.Module:
    from ..text2image import load_text2image

    # the public surface used: load_text2image, the conditional score model's forward with
    # cond=None, .unconditional_embeds, .encode_images, .decode, .sample_shape, .image_shape,
    # .is_latent, .sde, .prediction
    t2i = load_text2image(path, device=dev, dtype=dtype)
    inner = EmptyPromptScoreModel(t2i)  # the unconditional (empty-prompt) score
    shape = tuple(int(s) for s in t2i.sample_shape)
    details = {"pipeline": pipeline or "(no model_index.json)", "conditioning": "empty prompt (unconditional)",
               "scheduler": getattr(t2i, "scheduler_class", "?")}
    if t2i.is_latent:
        model: nn.Module = LatentScoreModel(inner, t2i.encode_images, t2i.decode, tuple(t2i.image_shape))
        model.text2image = t2i
        space, image_shape = "latent", tuple(int(s) for s in t2i.image_shape)
    else:
        model = inner
        model.text2image = t2i
        space, image_shape = "pixel", shape
    info = ModelInfo("score_model", "text2image_unconditional", ref, shape, image_shape, space=space, n_params=count_parameters(t2i),
                     sde=sde_summary(t2i.sde), prediction=t2i.prediction, details=details)
    return _finish(model, info)


# --- entry points ------------------------------------------------------------------------------
_FACTORY = ("a factory takes no arguments and returns a lidmem.models.EDMDenoiser, ScoreNetwork or GeneratorSpec "
            "(or a lidmem ScoreModel); see docs/models.md")


def _load_entry_point(ref: str, dev: torch.device) -> nn.Module:
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"entry point {ref!r}: cannot import module {module_name!r} ({exc}); put its folder on PYTHONPATH, "
                         "e.g. PYTHONPATH=. for a file in the current folder") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"entry point {ref!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"entry point {ref!r} is a {type(obj).__name__}, not a factory function; {_FACTORY}")
    import inspect

    try:
        inspect.signature(obj).bind()
    except TypeError as exc:  # a callable that is not a zero-argument factory (os:system)
        raise ValueError(f"entry point {ref!r} cannot be called without arguments ({exc}); {_FACTORY}") from None
    except ValueError:  # no signature to read (some builtins): the call itself decides
        pass
    spec = obj()
    if _looks_like_edm(spec):
        spec = EDMDenoiser(spec, float(spec.sigma_min), float(spec.sigma_max), (int(spec.img_channels), int(spec.img_resolution), int(spec.img_resolution)))
    if isinstance(spec, EDMDenoiser):
        sde = VESDE(spec.sigma_min, spec.sigma_max)
        model = ScoreModel(EDMFunction(spec.denoiser, sde), sde, prediction="x0").to(dev)
        info = ModelInfo("score_model", "entry_point", ref, spec.data_shape, spec.data_shape, spec.value_range, n_params=count_parameters(spec.denoiser),
                         sde=sde_summary(sde), prediction="x0 (EDM denoiser D(x, sigma), psi = 1)", details={"factory_returned": type(spec.denoiser).__name__})
        return _finish(model, info)
    if isinstance(spec, ScoreNetwork):
        if not isinstance(spec.sde, SDE):
            raise ValueError(f"entry point {ref!r} returned a ScoreNetwork whose sde is a {type(spec.sde).__name__}, not a lidmem SDE")
        model = ScoreModel(spec.net, spec.sde, prediction=spec.prediction).to(dev)
        info = ModelInfo("score_model", "entry_point", ref, spec.data_shape, spec.data_shape, spec.value_range, n_params=count_parameters(spec.net),
                         sde=sde_summary(spec.sde), prediction=spec.prediction, details={"factory_returned": type(spec.net).__name__})
        return _finish(model, info)
    if isinstance(spec, ScoreModel):
        shape = (getattr(spec, "metadata", None) or {}).get("data_shape")
        if not shape:
            raise ValueError(f"entry point {ref!r} returned a ScoreModel without metadata['data_shape']; return a lidmem.models.ScoreNetwork instead")
        shape = tuple(int(v) for v in shape)
        info = ModelInfo("score_model", "entry_point", ref, shape, shape, n_params=count_parameters(spec), sde=sde_summary(spec.sde),
                         prediction=spec.prediction, details={"factory_returned": "ScoreModel"})
        return _finish(spec.to(dev), info, getattr(spec, "metadata", None))
    if isinstance(spec, GeneratorSpec):
        gen = LoadedGenerator(spec.generator, spec.latent_dim, spec.data_shape, spec.latent, spec.latent_std).to(dev)
        dist = f"N(0, {spec.latent_std:g}^2 I)" if spec.latent == "normal" else "U[-1, 1]^d'"
        info = ModelInfo("generator", "entry_point", ref, spec.data_shape, spec.data_shape, spec.value_range, n_params=count_parameters(spec.generator),
                         latent=f"{dist}, latent_dim={spec.latent_dim}", details={"factory_returned": type(spec.generator).__name__})
        return _finish(gen, info)
    raise ValueError(f"entry point {ref!r} returned a {type(spec).__name__}; {_FACTORY}")


def _looks_like_edm(obj: Any) -> bool:
    return isinstance(obj, nn.Module) and all(hasattr(obj, a) for a in ("sigma_min", "sigma_max", "img_channels", "img_resolution"))

