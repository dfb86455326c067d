"""The ``samtune`` command line (typer).

Each module in this package adds its commands through ``register(app)``, so a command lives
in one file and this one never changes when a command is added. Heavy imports (torch,
transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
import warnings
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import SamtuneError, SamtuneWarning

# typer vendors click; these are the exceptions its parser raises for a bad option or value.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# OS errors that mean "this path cannot be used as given": input errors, exit 2.
_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """samtune's own warnings as one ``note:`` line; others as Python prints them."""
    if issubclass(category, SamtuneWarning):
        typer.echo(f"note: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


class _SamtuneGroup(TyperGroup):
    """Turns samtune errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx: typer.Context):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except SamtuneError as exc:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except _UsageError as exc:  # a bad option or value: one line, like every input error
            if type(exc).__name__ == "NoArgsIsHelpError":  # `samtune fit`-style help, not an error
                raise
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            where = (
                f"samtune {exc.ctx.info_name} " if exc.ctx and exc.ctx is not ctx else "samtune "
            )
            message = exc.format_message().replace(
                "Got unexpected extra", "Too many arguments: extra"
            )
            typer.echo(f"error: {message} (see `{where}--help`)", err=True)
            raise typer.Exit(2) from None
        except _PATH_ERRORS as exc:  # a path the user gave that cannot be used: input, exit 2
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    name="samtune",
    cls=_SamtuneGroup,
    help="Fine-tune Segment Anything (SAM) on your data: strategies, training, evaluation, adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"samtune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback on errors.")
    ] = False,
) -> None:
    """samtune: fine-tune Segment Anything (SAM) on your own data."""
    ctx.obj = {"debug": debug}


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(args=argv, prog_name="samtune")
    except SystemExit:
        raise
    except Exception as exc:  # a failure samtune has no message for: the run failed, exit 1
        if debug:
            raise
        typer.echo(
            f"error: samtune failed with {type(exc).__name__}: {exc}. This is a samtune bug if "
            "the input was valid; rerun with --debug for the traceback and report it",
            err=True,
        )
        sys.exit(1)
