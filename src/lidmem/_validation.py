"""Input validation shared by every public entry point (one boundary, as scikit-learn's
``check_array``). Every error names the argument, quotes the value and suggests a fix."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "argument_of",
    "message_naming",
    "read_text_file",
    "parse_json_text",
    "check_points",
    "all_finite",
    "check_t0",
    "check_positive_int",
    "check_probability",
    "check_choice",
    "make_generator",
    "check_seed",
    "check_device",
    "check_finite",
    "check_int_list",
    "check_output_path",
    "as_model_dtype",
    "renamed_argument",
    "check_image_range",
]


class ArgumentError(ValueError):
    """A bad value of one argument. ``argument`` is the name the caller used (``"lpca_k"``,
    ``"--k"``); the message names it, quotes the value and suggests a fix.

    A front end that spells the argument differently (the CLI's ``--lpca-k``) shows
    :func:`message_naming` ``(exc, "--lpca-k")``, so one check serves the library and the CLI.
    """

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


class ArgumentTypeError(TypeError):
    """A value of the wrong type for one argument (as :class:`ArgumentError`, from ``TypeError``)."""

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


_LEADING_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


def argument_of(exc: BaseException) -> str | None:
    """The argument an error is about: ``exc.argument`` (:class:`ArgumentError`,
    :class:`ArgumentTypeError`), else the leading ``name=`` of its message (the library's
    ``name=value must ...`` convention), else None."""
    name = getattr(exc, "argument", None)
    if isinstance(name, str) and name:
        return name
    m = _LEADING_NAME.match(str(exc))
    return m.group(1) if m else None


def message_naming(exc: BaseException, name: str, argument: str | None = None) -> str:
    """``str(exc)`` with its argument (``argument_of(exc)``, or the ``argument`` given) spelled
    ``name`` wherever the message uses it as the argument: as its first word, in ``arg=value``,
    and before a comparison or "must" (``use k <= 99``). ``lpca_k=500 must be <= 23`` becomes
    ``--lpca-k=500 must be <= 23``; ordinary words (``a model``), parts of longer names
    (``n_samples``, ``top-k``, ``x.k``) and ``arg == ...`` stay as they are."""
    argument = argument or argument_of(exc)
    text = str(exc)
    if not argument or argument == name:
        return text
    word = re.escape(argument)
    pattern = re.compile(rf"^{word}(?![\w\-])|(?<![\w.\-]){word}(?==(?!=)|\s(?:<=|>=|<|>|must)\s)")
    return pattern.sub(lambda _m: name, text)


def read_text_file(path: Any, what: str = "text file") -> str:
    """The contents of a UTF-8 text file; a file that is not UTF-8 text is a ValueError naming
    it (``FILE: not UTF-8 text (byte 0xb9 at offset 0); give a <what>``), never a codec error."""
    p = Path(path)
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); give a {what}") from None


def parse_json_text(text: Any, source: str) -> Any:
    """``json.loads(text)``; a decode error is a ValueError naming ``source`` (a file, or a file
    and its field: ``model.safetensors, metadata field 'lidmem'``) and where the text breaks."""
    import json

    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 text (offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def all_finite(t: torch.Tensor) -> bool:
    """Whether every element of the floating-point tensor ``t`` is finite.

    A finite sum proves it (a NaN or an infinity makes any sum NaN or infinite) in one reduction,
    without the four element-wise passes and the boolean tensor of ``isfinite(t).all()`` (a tenth
    of their time on a 512 x 784 batch); only a sum that is not finite (a non-finite element, or
    finite values whose sum overflows) goes to the element-wise check, which decides."""
    if t.numel() == 0:
        return True
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_points(
    x: Any,
    name: str = "x",
    *,
    min_samples: int = 1,
    min_ndim: int = 2,
    max_ndim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Validate a batch-first array of points and return it as a floating tensor.

    Parameters
    ----------
    x : array-like of shape (n, ...) 
        Points, batch first. NumPy arrays and lists are converted (a list or tuple of floats
        to torch's default dtype, float32, as ``torch.tensor(list)``; a NumPy array keeps its
        dtype); tensors keep their device unless ``device`` is given.
    name : str
        Argument name used in error messages.
    min_samples : int, default=1
        Minimum number of rows ``n``.
    min_ndim, max_ndim : int
        Allowed tensor ranks (``(n, d)`` is rank 2; images ``(n, c, h, w)`` are rank 4).

    Raises
    ------
    TypeError
        If ``x`` is not array-like.
    ValueError
        If ``x`` has the wrong rank, too few rows, zero features, or non-finite values.
    """
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple)):
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as exc:
            raise ArgumentTypeError(f"{name} must be a numeric array of shape (n, d); got {type(x).__name__} ({exc})", argument=name) from exc
    else:
        raise ArgumentTypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape (n, d); got {type(x).__name__}", argument=name
        )
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)):
        raise ArgumentTypeError(f"{name} must hold real numbers; got dtype {t.dtype}", argument=name)
    if t.ndim < min_ndim or (max_ndim is not None and t.ndim > max_ndim):
        allowed = f"{min_ndim}" if max_ndim == min_ndim else f"at least {min_ndim}" if max_ndim is None else f"{min_ndim}..{max_ndim}"
        raise ArgumentError(
            f"{name} must be batch-first with rank {allowed} (e.g. shape (n, d)); got shape {tuple(t.shape)}. "
            "Reshape a single point with x[None] or flatten images with x.reshape(len(x), -1).", argument=name
        )
    if t.shape[0] == 0 and min_samples >= 1:
        raise ArgumentError(f"{name} is empty (shape {tuple(t.shape)}); give at least {min_samples} sample(s)", argument=name)
    if t.shape[0] < min_samples:
        raise ArgumentError(
            f"{name} has {t.shape[0]} sample(s) (shape {tuple(t.shape)}) while a minimum of {min_samples} is required", argument=name
        )
    if t.ndim >= 2 and math.prod(t.shape[1:]) == 0:
        raise ArgumentError(f"{name} has zero features (shape {tuple(t.shape)})", argument=name)
    if not t.is_floating_point() or (isinstance(x, (list, tuple)) and dtype is None):
        t = t.to(torch.get_default_dtype())  # a Python list becomes what torch.tensor(list) gives
    if dtype is not None:
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    if not all_finite(t):
        bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).sum())
        raise ArgumentError(f"{name} contains NaN or infinite values in {bad} of {t.shape[0]} rows; drop or impute them first", argument=name)
    return t


def check_t0(t0: Any, name: str = "t0") -> float:
    """Validate a diffusion time in (0, 1] (the SDE time convention of :mod:`lidmem.diffusion`)."""
    try:
        v = float(t0)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{name} must be a float in (0, 1]; got {t0!r}", argument=name) from exc
    if not (0.0 < v <= 1.0) or not math.isfinite(v):
        raise ArgumentError(f"{name}={t0!r} must lie in (0, 1]; try {name}=0.01", argument=name)
    return v


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Validate an integer ``>= minimum`` (booleans are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be an integer >= {minimum}; got {value!r}", argument=name)
    if value < minimum:
        raise ArgumentError(f"{name}={value} must be >= {minimum}", argument=name)
    return int(value)


def check_probability(value: Any, name: str, *, low: float = 0.0, high: float = 1.0, closed: bool = True) -> float:
    """Validate a float in ``[low, high]`` (or ``(low, high)`` when ``closed=False``)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{name} must be a float; got {value!r}", argument=name) from exc
    ok = (low <= v <= high) if closed else (low < v < high)
    if not ok or not math.isfinite(v):
        br = ("[", "]") if closed else ("(", ")")
        raise ArgumentError(f"{name}={value!r} must lie in {br[0]}{low}, {high}{br[1]}", argument=name)
    return v


def check_choice(value: Any, name: str, options: tuple[str, ...] | list[str]) -> str:
    """Validate that ``value`` is one of ``options``; the error lists the valid names."""
    if value not in options:
        raise ArgumentError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, options))}", argument=name)
    return value


#: Seeds torch and NumPy both take: ``0 <= seed < 2**64``.
SEED_MAX = 2**64 - 1


def check_seed(seed: Any, name: str = "seed") -> int:
    """Validate an integer seed in ``[0, 2**64 - 1]`` (what ``torch.Generator.manual_seed`` and
    ``numpy.random.default_rng`` both accept); booleans and floats are refused."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be an int in [0, 2**64 - 1], a torch.Generator or None; got {seed!r}", argument=name)
    if not 0 <= int(seed) <= SEED_MAX:
        raise ArgumentError(f"{name}={int(seed)} is outside the valid range [0, 2**64 - 1]; use e.g. {name}=0", argument=name)
    return int(seed)


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu", name: str = "seed") -> torch.Generator:
    """Map ``None``/int/``torch.Generator`` to a ``torch.Generator`` (scikit-learn's
    ``check_random_state`` for torch). ``None`` draws a fresh non-deterministic seed; an int must
    lie in ``[0, 2**64 - 1]`` (:func:`check_seed`, the error names ``name``)."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None:
        seed = check_seed(seed, name)
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def check_device(device: Any, name: str = "device") -> torch.device:
    """Parse a torch device and check that this machine and this torch build have it (``cpu``,
    ``cuda``, ``cuda:1``, ``mps``). Raises :class:`ArgumentError` naming ``name`` for an unknown
    name (``"tpu"``) or a missing accelerator (``"cuda"`` on a CPU-only torch), before any model
    is loaded."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ArgumentError(f"{name}={device!r} is not a torch device; use cpu, cuda, cuda:N or mps", argument=name) from None
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ArgumentError(
                f"{name}={device!r} but this torch ({torch.__version__}) was built without CUDA; pass {name}='cpu' "
                "(or install a CUDA build of torch)", argument=name)
        if not torch.cuda.is_available():
            raise ArgumentError(f"{name}={device!r} but this machine has no CUDA device (torch {torch.__version__}); pass {name}='cpu'", argument=name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArgumentError(f"{name}={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)", argument=name)
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ArgumentError(f"{name}={device!r} but MPS is not available on this machine; pass {name}='cpu'", argument=name)
    elif dev.type != "cpu":
        raise ArgumentError(f"{name}={device!r} is not supported here; use cpu, cuda, cuda:N or mps", argument=name)
    return dev


def check_finite(value: Any, name: str) -> float:
    """Validate a finite real number (rejects NaN and +-inf)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{name} must be a number; got {value!r}", argument=name) from exc
    if not math.isfinite(v):
        raise ArgumentError(f"{name}={value!r} must be a finite number", argument=name)
    return v


def check_int_list(text: str, name: str, *, minimum: int = 1) -> list[int]:
    """Parse comma-separated integers ``>= minimum`` (``"1,8,8"``); ``1.5`` is refused, never truncated."""
    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise ArgumentError(f"{name}={text!r} must be comma-separated integers, e.g. 1,8,8", argument=name)
    out = []
    for v in items:
        try:
            i = int(v)
        except ValueError:
            raise ArgumentError(f"{name}={text!r} must be comma-separated integers, e.g. 1,8,8 ({v!r} is not an integer)", argument=name) from None
        if i < minimum:
            raise ArgumentError(f"{name}={text!r}: every value must be >= {minimum}", argument=name)
        out.append(i)
    return out


def check_output_path(path: Any, name: str = "out", *, kind: str = "dir", suffixes: tuple[str, ...] | None = None) -> Path:
    """Check an output location before any work, so a run never fails at its end.

    ``kind="dir"``: an output folder that may not exist yet; ``kind="file"``: an output file
    (its folder may not exist yet; ``suffixes`` lists the allowed endings). Refused: a folder
    path that is an existing file, a path below an existing file, an existing folder where a
    file is wanted (a folder named like a file, ``out.csv/``), and a location whose nearest
    existing folder is not writable. Nothing is created.
    """
    if path is None or str(path) == "":
        raise ArgumentError(f"{name} is empty; give an output {'folder' if kind == 'dir' else 'file'}", argument=name)
    p = Path(path)
    if kind == "dir":
        if p.exists() and not p.is_dir():
            raise ArgumentError(f"{name}={str(p)!r} is an existing file; the output must be a folder (choose another path)", argument=name)
    elif kind == "file":
        if p.is_dir():
            raise ArgumentError(f"{name}={str(p)!r} is an existing folder; give a file name{' ending in ' + ' or '.join(suffixes) if suffixes else ''}", argument=name)
        if suffixes is not None and p.suffix.lower() not in suffixes:
            raise ArgumentError(f"{name}={str(p)!r} must end in {' or '.join(suffixes)}", argument=name)
        if p.exists() and not os.access(p, os.W_OK):
            raise ArgumentError(f"{name}={str(p)!r} is not writable", argument=name)
    else:
        raise ArgumentError(f"kind={kind!r} must be 'dir' or 'file'", argument='kind')
    # the nearest existing ancestor must be a writable folder
    anc = p if (kind == "dir" and p.exists()) else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ArgumentError(f"{name}={str(p)!r} lies under {str(anc)!r}, which is a file, not a folder", argument=name)
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ArgumentError(f"{name}={str(p)!r} cannot be written: no write permission in {str(anc)!r}", argument=name)
    return p


def as_model_dtype(x: Any, model: Any) -> Any:
    """Cast floating input ``x`` (tensor, NumPy array, list of floats) to the dtype of
    ``model``'s floating parameters (the boundary rule of the estimators: a float64 NumPy array
    meets a float32 network). Anything else, and
    models without parameters (analytic scores), pass through unchanged."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return x
    p = next((q for q in params() if q.is_floating_point()), None)
    if p is None:
        return x
    if isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):
            return x  # ragged or not numeric: check_points names it
        if np.issubdtype(arr.dtype, np.floating):
            return torch.as_tensor(arr).to(p.dtype)
        return x
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(p.dtype) if t.dtype != p.dtype else x
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != p.dtype:
        return x.to(p.dtype)
    return x



def renamed_argument(new_value: Any, old_value: Any, *, new: str, old: str, default: Any = None, func: str = "") -> Any:
    """Resolve a renamed keyword argument kept as a deprecated alias for one release.

    Each public function that renamed ``old`` to ``new`` keeps an explicit keyword-only parameter
    ``old=None`` and calls ``new = renamed_argument(new, old, new=..., old=..., default=...)``.
    When ``old`` was given (not None) a :class:`DeprecationWarning` names the new spelling and its
    value is used; giving both (``new`` differing from ``default``) is a ``TypeError``.
    """
    if old_value is None:
        return new_value
    where = f"{func}(): " if func else ""
    if new_value is not default and new_value != default:
        raise TypeError(f"{where}got both {new}={new_value!r} and its deprecated alias {old}={old_value!r}; pass only {new}")
    warnings.warn(f"{where}{old!r} is deprecated and will be removed in the next release; use {new!r}", DeprecationWarning, stacklevel=3)
    return old_value


def check_image_range(x: Any, name: str, *, tol: float = 0.02) -> None:
    """Check that images ``x`` follow lidmem's [-1, 1] convention; ``name`` is the argument to blame.

    Raises ValueError when a value lies outside ``[-1 - tol, 1 + tol]`` (e.g. 0..255 pixels).
    Warns (UserWarning) when every value lies in [0, 1] and some exceed 0.5 of it: the images are
    most likely in [0, 1] (map them with :func:`lidmem.data.images.from_unit_range`). NaN/inf raise ValueError.
    """
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.size == 0:
        return
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.0 - tol or hi > 1.0 + tol:
        raise ValueError(
            f"{name} has values in [{lo:.3g}, {hi:.3g}] but lidmem images are in [-1, 1]; "
            "scale 8-bit pixels v with 2 * v / 255 - 1 (or [0, 1] images x with 2 * x - 1)"
        )
    if lo >= 0.0 and hi > 0.5:
        warnings.warn(
            f"{name} has values in [{lo:.3g}, {hi:.3g}]: it looks like [0, 1] images, but lidmem images are in [-1, 1] "
            "(map them with lidmem.data.images.from_unit_range, i.e. 2 * x - 1)",
            UserWarning,
            stacklevel=2,
        )
