"""Helpers shared by CLI commands: user-facing errors and console output."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr: styled on a terminal, else as ONE physical line
    (no wrapping at 80 columns, newlines folded) so that logs and ``grep`` see one record."""
    text = " ".join(str(message).split())
    if sys.stderr.isatty():
        console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
    else:
        sys.stderr.write(f"error: {text}\n")
        sys.stderr.flush()


def _current_params() -> list:
    """The parameters of the command being run (click's current context), or []."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - typer without a vendored click
        from click import get_current_context
    ctx = get_current_context(silent=True)
    return list(getattr(getattr(ctx, "command", None), "params", None) or [])


def option_name(param: object) -> str:
    """How a user types a click parameter: its first ``--long`` spelling (``--lpca-k``), else its
    first spelling (``-k``); an argument is its metavar (``DATA``)."""
    if getattr(param, "param_type_name", "") == "argument":
        return str(getattr(param, "metavar", None) or str(getattr(param, "name", "")).upper())
    opts = list(getattr(param, "opts", []))
    return next((o for o in opts if o.startswith("--")), opts[0] if opts else str(getattr(param, "name", "")))


def option_for(argument: str, options: Mapping[str, str] | None = None) -> str | None:
    """The CLI spelling of the library argument ``argument`` in the command being run, the one
    place where library names become option names: ``options`` (the command's own map, for
    arguments named differently from its options: ``{"train": "--data"}``) first, then the
    command's parameter of that name (``lpca_k`` -> ``--lpca-k``, ``value_range`` ->
    ``--value-range``). None when ``argument`` already is an option or the command has no such one."""
    if not argument or argument.startswith("-"):
        return None
    if options and argument in options:
        return options[argument]
    for param in _current_params():
        if getattr(param, "name", None) == argument:
            return option_name(param)
    return None


def _describe(exc: BaseException, options: Mapping[str, str] | None = None) -> str:
    """A one-line message for ``exc`` that names the file when the exception knows it, and the
    option the user typed for the library argument it is about (:func:`option_for`)."""
    from .._validation import argument_of, message_naming

    argument = argument_of(exc)
    if argument in ("model", "generator") and not isinstance(exc, OSError):
        ref = _model_reference()  # what the model returned: name the reference the user gave
        if ref is not None and ref not in str(exc):
            option = option_for("model", options) or "--model"
            return f"{option + ' ' if option.startswith('-') else ''}{ref}: {str(exc)}"
    if argument is not None and not isinstance(exc, OSError):
        option = option_for(argument, options)
        if option is not None:
            return message_naming(exc, option, argument)
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None) and str(exc.filename) not in str(exc):
        return f"{exc.filename}: no such file or folder"
    reason = getattr(exc, "reason", None)  # urllib.error.URLError
    if reason is not None and type(exc).__name__ == "URLError":
        return f"cannot reach the endpoint: {reason}"
    return str(exc) or type(exc).__name__


#: Library arguments whose option is spelled differently from the argument, per command (the one
#: table of such names; an argument named like its option, ``lpca_k`` -> ``--lpca-k``, needs no
#: entry: :func:`option_for` reads it from the command's parameters).
COMMAND_OPTIONS: dict[str, dict[str, str]] = {
    "audit": {"flipd_probes": "--n-probes", "nb_scores": "--n-scores", "ref": "--model"},
    "mmh": {"train": "--data", "x": "--data", "ref": "--model"},
    "score": {"source": "--data", "n_scores": "--n-scores"},
    "t2i": {"path_or_id": "--model"},
}


#: ``lidmem --debug`` (or ``LIDMEM_DEBUG=1``): errors keep their traceback. Set by the app's callback.
DEBUG = False


def debug_enabled() -> bool:
    """True under ``lidmem --debug`` or with ``LIDMEM_DEBUG`` set to anything but ``""``/``0``."""
    import os

    return DEBUG or os.environ.get("LIDMEM_DEBUG", "").strip() not in ("", "0")


_DEBUG_HINT = "LIDMEM_DEBUG=1 (or lidmem --debug) shows the traceback"


def _model_reference() -> str | None:
    """The model reference the running command was given (its ``--model`` option or ``MODEL``
    argument), or None."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - typer without a vendored click
        from click import get_current_context
    ctx = get_current_context(silent=True)
    ref = (getattr(ctx, "params", None) or {}).get("model")
    return None if ref is None else str(ref)


def _describe_failure(exc: BaseException) -> tuple[str, int]:
    """One line and an exit code for an exception that is not an input error of the library:
    raised inside the user's model (or by an estimator on what the model returned) when the
    command runs a model (exit 2, the model reference named), else a lidmem bug (exit 1)."""
    text = " ".join(str(exc).split()) or "(no message)"
    ref = _model_reference()
    if ref is not None:
        return (f"the model {ref} failed: {type(exc).__name__}: {text}; check that it takes the inputs lidmem gives "
                f"(lidmem inspect {ref} shows them); {_DEBUG_HINT}"), 2
    return f"{type(exc).__name__}: {text} (a lidmem bug: please report it; {_DEBUG_HINT})", 1


@contextmanager
def user_errors(options: str | Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn every error of a command into one ``error:`` line (exit 2 for input problems).

    Input errors: ValueError, TypeError (bad arguments and data), OSError (missing, unreadable or
    unwritable files, network errors such as ``URLError``) and EOFError (truncated files), exit 2.
    Any other exception (a torch ``RuntimeError`` from inside the user's network, say) is one line
    too: with the model reference of the command (its ``--model``) named and exit 2 when the
    command runs a model, else as a lidmem bug with exit 1. ``lidmem --debug`` or
    ``LIDMEM_DEBUG=1`` lets every error keep its traceback. A library error about an argument
    (:class:`lidmem._validation.ArgumentError`, or a message starting ``name=``) names the
    option instead (:func:`option_for`; ``options`` maps the command's library arguments
    whose option is named differently, or
    the name of its entry in :data:`COMMAND_OPTIONS`).
    """
    if isinstance(options, str):
        options = COMMAND_OPTIONS[options]
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except (ValueError, TypeError, OSError, EOFError) as exc:
        if debug_enabled():
            raise
        print_error(_describe(exc, options))
        raise typer.Exit(code=2) from None
    except Exception as exc:
        if debug_enabled() or _is_click_exception(exc):
            raise
        message, code = _describe_failure(exc)
        print_error(message)
        raise typer.Exit(code=code) from None


def _is_click_exception(exc: BaseException) -> bool:
    """click's own exceptions (usage errors, ``Exit``) pass through :func:`user_errors`."""
    try:
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exceptions
    kinds = tuple(k for k in (getattr(click_exceptions, n, None) for n in ("ClickException", "Exit", "Abort")) if isinstance(k, type))
    return isinstance(exc, kinds)


def fail(message: str) -> None:
    """Print ``message`` as an error and exit with code 2."""
    print_error(message)
    raise typer.Exit(code=2)


def check_out(out: object, option: str = "--out", *, kind: str = "dir", suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output location first, in every command (see :func:`lidmem._validation.check_output_path`)."""
    from .._validation import check_output_path

    check_output_path(out, option, kind=kind, suffixes=suffixes)


def check_device_option(device: str | None, option: str = "--device") -> None:
    """Check ``--device`` (name and availability) before any model is loaded."""
    if device is not None:
        from .._validation import check_device

        check_device(device, option)


def parse_lpca_tau(text: str, option: str = "--tau") -> str | float:
    """Parse a local-PCA threshold option: ``fo`` | ``percentile`` | a number >= 0
    (as :class:`lidmem.estimators.LocalPCA` takes ``tau``)."""
    if text in ("fo", "percentile"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} must be 'fo', 'percentile' or a number >= 0") from None
    if not value >= 0:
        raise ValueError(f"{option}={text!r} must be >= 0")
    return value


def parse_lpca_radius(text: str, option: str = "--radius") -> str | float | None:
    """Parse a local-PCA neighbourhood restriction option: a radius >= 0 (0 = exact duplicates
    only) | ``percentile`` | ``none`` (as :class:`lidmem.estimators.LocalPCA` takes ``radius``)."""
    if text == "percentile":
        return text
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}={text!r} must be a number >= 0 (0 = exact duplicates only), 'percentile' or 'none'") from None
    if not value >= 0:
        raise ValueError(f"{option}={text!r} must be >= 0")
    return value


def check_model_file(model: object, what: str, option: str = "--model") -> None:
    """``--model`` must name a model reference :func:`lidmem.models.load_model` reads: an existing
    file or folder, or a ``package.module:factory`` entry point (named in the error, with what is
    expected). What the file or folder holds is checked by the loader."""
    from pathlib import Path

    from ..models.loader import is_entry_point

    p = Path(str(model))
    if not p.exists() and not is_entry_point(str(model)):
        raise ValueError(f"{option} {model} does not exist; give {what}")


def check_finite_images(images: object, option: str, source: object) -> None:
    """Refuse NaN or infinite pixels in images read for ``option`` (names the file or folder)."""
    import numpy as np

    arr = np.asarray(images)
    bad = ~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
    if bad.any():
        raise ValueError(f"{option} {source}: {int(bad.sum())} of {len(arr)} images hold NaN or infinite values (first: row {int(np.argmax(bad))})")


def check_audit_options(
    *, out: object, model: object, num_samples: int, sampling_steps: int, flipd_t0: float, flipd_trace: str, flipd_probes: int,
    nb_t0: float, nb_scores: int | None, copy_k: int, exact_threshold: float, near_threshold: float, cos_threshold: float,
    search: str, lpca_k: int | None, seed: int,
) -> None:
    """Every ``lidmem audit`` option checked with its own name, before any file is read."""
    from pathlib import Path

    from .._validation import check_choice, check_finite, check_positive_int, check_seed, check_t0

    check_out(out)
    check_t0(flipd_t0, "--flipd-t0")
    check_t0(nb_t0, "--nb-t0")
    check_choice(flipd_trace, "--flipd-trace", ("hutchinson", "exact"))
    check_choice(search, "--search", ("auto", "exact", "faiss"))
    if search == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError:
            raise ValueError("--search faiss needs the faiss package (pip install lidmem[faiss]); use --search exact") from None
    for value, name in ((num_samples, "--num-samples"), (sampling_steps, "--sampling-steps"), (flipd_probes, "--n-probes"),
                        (copy_k, "--copy-k")):
        check_positive_int(value, name)
    if lpca_k is not None:
        check_positive_int(lpca_k, "--lpca-k", minimum=2)
    if nb_scores is not None:
        check_positive_int(nb_scores, "--n-scores")
    check_seed(seed, "--seed")
    exact = check_finite(exact_threshold, "--exact-threshold")
    near = check_finite(near_threshold, "--near-threshold")
    if not 0 <= exact <= near:
        raise ValueError(f"--exact-threshold={exact_threshold} and --near-threshold={near_threshold} must satisfy 0 <= exact <= near")
    cos = check_finite(cos_threshold, "--cos-threshold")
    if not -1.0 <= cos <= 1.0:
        raise ValueError(f"--cos-threshold={cos_threshold} must lie in [-1, 1]")
    check_model_file(model, "a lidmem checkpoint (.safetensors), a diffusers model folder or package.module:factory")


def check_percentile(value: float, option: str) -> None:
    """A percentile option in [0, 100]."""
    from .._validation import check_probability

    check_probability(value, option, low=0.0, high=100.0)


def check_mmh_options(
    *, out: object, model: object, t0: float, trace: str, n_probes: int, k: int | None, tau_percentile: float, alpha: float,
    radius_percentile: float, od_margin: float, dd_threshold: float, seed: int, batch_size: int | None, device: str | None,
) -> None:
    """Every ``lidmem mmh`` option checked with its own name, before the data or the model is read."""
    from pathlib import Path

    from .._validation import check_choice, check_finite, check_positive_int, check_probability, check_seed, check_t0

    check_out(out)
    check_t0(t0, "--t0")
    check_choice(trace, "--trace", ("exact", "hutchinson"))
    check_positive_int(n_probes, "--n-probes")
    if k is not None:
        check_positive_int(k, "--k")
    check_percentile(tau_percentile, "--tau-percentile")
    check_percentile(radius_percentile, "--radius-percentile")
    check_probability(alpha, "--alpha", low=0.0, high=1.0, closed=False)
    if check_finite(od_margin, "--od-margin") < 0:
        raise ValueError(f"--od-margin={od_margin} must be >= 0")
    check_finite(dd_threshold, "--dd-threshold")
    check_seed(seed, "--seed")
    if batch_size is not None:
        check_positive_int(batch_size, "--batch-size")
    check_device_option(device)
    check_model_file(model, "a lidmem score-model checkpoint (.safetensors), a diffusers model folder or package.module:factory")


def check_score_options(
    *, out: object, model: object, metrics: str, shard_size: int, batch_size: int, seed: int, device: str | None, precision: str,
    t0: float, n_probes: int, probe: str, nb_t0: float, n_scores: int | None, cfg_t0: float, euler_steps: int,
    nb_threshold: str = "percentile",
) -> None:
    """Every ``lidmem score`` option checked with its own name, before the data or the model is read."""
    from pathlib import Path

    from .._validation import check_choice, check_positive_int, check_seed, check_t0
    from ..scoring.runner import PRECISIONS, metric_names

    check_out(out)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--metrics={metrics!r} is empty; choose from {', '.join(metric_names())}")
    for m in names:
        check_choice(m, "--metrics", metric_names())
    check_positive_int(shard_size, "--shard-size")
    check_positive_int(batch_size, "--batch-size")
    check_seed(seed, "--seed")
    check_choice(precision, "--precision", PRECISIONS)
    check_t0(t0, "--t0")
    check_t0(nb_t0, "--nb-t0")
    check_t0(cfg_t0, "--cfg-t0")
    check_positive_int(n_probes, "--n-probes")
    check_positive_int(euler_steps, "--euler-steps")
    if n_scores is not None:
        check_positive_int(n_scores, "--n-scores")
    parse_rank_threshold(nb_threshold, "--nb-threshold")
    check_choice(probe, "--probe", ("rademacher", "gaussian"))
    check_device_option(device)
    if model is not None:
        check_model_file(model, "a lidmem score-model checkpoint (.safetensors), a diffusers model folder or package.module:factory")


def check_lid_options(*, k: int, tau: str, tau_percentile: float, alpha: float, radius: str, radius_percentile: float, seed: int) -> None:
    """``lidmem lid`` options checked with their own names, before the data is read."""
    from .._validation import check_positive_int, check_probability, check_seed

    check_positive_int(k, "--k")
    parse_lpca_tau(tau, "--tau")
    parse_lpca_radius(radius, "--radius")
    check_percentile(tau_percentile, "--tau-percentile")
    check_percentile(radius_percentile, "--radius-percentile")
    check_probability(alpha, "--alpha", low=0.0, high=1.0, closed=False)
    check_seed(seed, "--seed")


def parse_rank_threshold(text: str, name: str) -> str | float:
    """A rank-cut option: ``gap``, ``percentile`` or a float >= 0 (lidmem.estimators._rank)."""
    from ..estimators._rank import check_threshold

    try:
        value: str | float = float(text)
    except ValueError:
        value = text
    return check_threshold(value, name)


def renamed_option(new_value: object, old_value: object, *, new: str, old: str, default: object = None) -> object:
    """Resolve a renamed CLI option kept as a hidden deprecated alias for one release.

    When ``old`` was given, a one-line deprecation notice goes to stderr and its value is used;
    giving both is an error (ValueError, shown by :func:`user_errors` as one line, exit 2).
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise ValueError(f"{old} is the deprecated spelling of {new}; pass only {new}")
    print(f"lidmem: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)
    return old_value
