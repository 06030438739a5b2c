"""lidmem checkpoints: one ``.safetensors`` file holding the weights, with the network config,
the SDE and the parametrisation stored beside them in the file's metadata.

Metadata (``safetensors`` string metadata, key ``"lidmem"``, a JSON object):

    {"format": 1,
     "kind": "score_model" | "generator" | <other>,
     "network": {"type": ..., ...},         # rebuilt by lidmem.diffusion.networks.build_network
     "sde": {"type": "vp"|"ve"|"ddpm", ...}, # score models only
     "prediction": "epsilon"|"score"|...,    # score models only
     "data_shape": [c, h, w] or [d],
     "extra": {...}}                          # free-form: training settings, data description
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import check_device
from .networks import build_network
from .score import ScoreModel
from .sde import SDE, sde_from_config

__all__ = ["save_checkpoint", "read_metadata", "load_network", "load_score_model", "CHECKPOINT_KINDS"]

CHECKPOINT_KINDS = ("score_model", "generator", "text2image")
_KEY = "lidmem"


def save_checkpoint(
    path: str | Path,
    net: nn.Module,
    *,
    kind: str = "score_model",
    sde: SDE | None = None,
    prediction: str | None = None,
    data_shape: tuple[int, ...] | list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``net``'s weights and everything needed to rebuild it to ``path`` (``.safetensors``).

    ``net`` must have a ``config`` dict (see :mod:`lidmem.diffusion.networks`). The file is
    written to a temporary name and renamed, so an interrupted save never leaves a torn file.
    """
    from safetensors.torch import save_file

    config = getattr(net, "config", None)
    if not isinstance(config, dict) or "type" not in config:
        raise TypeError(f"{type(net).__name__} has no config dict with a 'type'; see lidmem.diffusion.networks")
    if kind == "score_model" and (sde is None or prediction is None):
        raise ValueError("a score_model checkpoint needs sde= and prediction=")
    meta = {
        "format": 1,
        "kind": kind,
        "network": config,
        "sde": sde.to_config() if sde is not None else None,
        "prediction": prediction,
        "data_shape": list(data_shape) if data_shape is not None else None,
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={_KEY: json.dumps(meta)})
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Return the lidmem metadata of a checkpoint; ValueError if the file is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_KEY)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a safetensors file: {exc}") from exc
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but not a lidmem checkpoint (no '{_KEY}' metadata)")
    from .._validation import parse_json_text

    meta = parse_json_text(raw, f"{path}: safetensors metadata field {_KEY!r}")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: safetensors metadata field {_KEY!r} holds a JSON {type(meta).__name__}, not an object")
    _check_fields(meta, path)
    return meta


def _field_error(path: Path | str, field: str, problem: str) -> ValueError:
    """A damaged metadata field: names the file and the field (``FILE: metadata field 'network':
    dim=-3 must be >= 1``)."""
    return ValueError(f"{path}: metadata field {field!r}: {problem}; the checkpoint is damaged (re-save it with lidmem)")


def _check_fields(meta: dict[str, Any], path: Path) -> None:
    """The types of the metadata fields that rebuild the model (their values are checked where
    they are used, with the field named: :func:`load_network`, :func:`load_score_model`)."""
    net = meta.get("network")
    if net is not None and (not isinstance(net, dict) or not isinstance(net.get("type"), str)):
        raise _field_error(path, "network", f"must be a JSON object with a 'type' string; got {json.dumps(net)[:80]}")
    sde = meta.get("sde")
    if sde is not None and not isinstance(sde, dict):
        raise _field_error(path, "sde", f"must be a JSON object or null; got {json.dumps(sde)[:80]}")
    shape = meta.get("data_shape")
    if shape is not None and (not isinstance(shape, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise _field_error(path, "data_shape", f"must be a list of positive integers such as [1, 8, 8]; got {json.dumps(shape)[:80]}")
    extra = meta.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise _field_error(path, "extra", f"must be a JSON object; got {json.dumps(extra)[:80]}")


def load_network(path: str | Path, *, expected_kind: str | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored at ``path`` and load its weights; returns ``(net, metadata)``.

    Raises ValueError naming both kinds when ``expected_kind`` does not match the file.
    """
    from safetensors.torch import load_file

    device = check_device(device)
    meta = read_metadata(path)
    if expected_kind is not None and meta.get("kind") != expected_kind:
        raise ValueError(f"checkpoint {path} holds a {meta.get('kind')!r} model, but a {expected_kind!r} checkpoint is needed here")
    if "network" not in meta:
        raise _field_error(path, "network", "is missing (the network's config)")
    try:
        net = build_network(meta["network"])
    except (ValueError, TypeError, KeyError) as exc:
        raise _field_error(path, "network", " ".join(str(exc).split()) or type(exc).__name__) from None
    try:
        net.load_state_dict(load_file(str(path)))
    except (RuntimeError, KeyError, TypeError) as exc:  # weights and config disagree (state_dict mismatch)
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(f"checkpoint {path} is damaged: its weights do not fit the network it describes ({first})") from None
    net.to(device).eval()
    return net, meta


def load_score_model(path: str | Path, *, device: str | torch.device = "cpu") -> ScoreModel:
    """Load a ``score_model`` checkpoint as a :class:`ScoreModel` (in eval mode).

    The checkpoint metadata is available as ``model.metadata``.
    """
    net, meta = load_network(path, expected_kind="score_model", device=device)
    if not isinstance(meta.get("sde"), dict):
        raise _field_error(path, "sde", "is missing; a score model needs its SDE (e.g. {\"type\": \"vp\", \"beta_min\": 0.1, \"beta_max\": 20.0})")
    try:
        sde = sde_from_config(meta["sde"])
    except (ValueError, TypeError, KeyError) as exc:
        raise _field_error(path, "sde", " ".join(str(exc).split()) or type(exc).__name__) from None
    try:
        model = ScoreModel(net, sde, prediction=meta.get("prediction"))
    except (ValueError, TypeError) as exc:
        raise _field_error(path, "prediction", " ".join(str(exc).split())) from None
    model.metadata = meta
    return model.eval()
