"""The ``lidmem`` command line. Commands are thin: parse, build library objects, call, write.

Each command group lives in its own module exposing ``register(app, demo_app)``; heavy imports
(torch models, diffusers) happen inside the commands so that ``lidmem --help`` is instant.
"""

from __future__ import annotations

import typer

from . import audit, benchmark, lid, mmh, score, t2i, vonmises, digits, text2image_demo
from . import inspect as inspect_cmd, train as train_cmd

app = typer.Typer(
    name="lidmem",
    help="Measure memorization in generative models through local intrinsic dimension (LID).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
demo_app = typer.Typer(help="Run the paper's experiments end to end from shipped checkpoints.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

for _module in (lid, mmh, vonmises, audit, digits, t2i, text2image_demo, score, inspect_cmd, train_cmd, benchmark):
    _module.register(app, demo_app)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lidmem")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lidmem {_package_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    threads: int = typer.Option(
        1, "--threads", envvar="LIDMEM_THREADS", min=0,
        help="torch CPU threads. Default 1: on a CPU shared with any other busy process more threads make "
             "lidmem many times slower (benchmarks/threads_under_load.py); on an idle many-core machine try "
             "the number of physical cores. 0 = torch's default (one per core, or OMP_NUM_THREADS).",
    ),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error instead of one error line (as LIDMEM_DEBUG=1)."),
) -> None:
    """lidmem: LID_theta / LID_* estimators, memorization audits and text-to-image tools."""
    from ..utils import set_threads
    from . import _common

    _common.DEBUG = debug
    set_threads(threads)


@app.command("weights")
def weights_command() -> None:
    """Print the installed paths of the shipped weights (usable as --model of mmh, audit, t2i)."""
    from ..utils import shipped_weights

    found = shipped_weights()
    if not found:
        typer.echo("no shipped weights found in this installation", err=True)
        raise typer.Exit(code=2)
    for name, path in found.items():
        typer.echo(f"{name}\t{path}")


def main() -> None:
    """Entry point of the ``lidmem`` script: the typer app, except that a usage error (a value
    click cannot parse, an unknown option) is ONE line on stderr when stderr is not a terminal,
    like every other lidmem error (typer draws a multi-line panel)."""
    import sys

    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exceptions

    from ._common import print_error

    try:
        code = app(standalone_mode=False)
    except click_exceptions.ClickException as exc:
        if sys.stderr.isatty() or type(exc).__name__ == "NoArgsIsHelpError":
            try:
                from typer import rich_utils

                rich_utils.rich_format_error(exc)  # prints nothing for NoArgsIsHelpError (help is shown)
            except (ImportError, AttributeError):
                exc.show()
        else:
            print_error(exc.format_message())
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print_error("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
