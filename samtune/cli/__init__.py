"""The ``samtune`` command line (typer).

Each module in this package adds its commands through ``register(app)``, so a command lives
in one file and this one never changes when a command is added. Heavy imports (torch,
transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
import sys
import traceback
import warnings
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import SamtuneError, SamtuneWarning, one_line

# typer vendors click; these are the exceptions its parser raises for a bad option or value.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

# OS errors that mean "this path cannot be used as given": input errors, exit 2.
_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
# OS errors that mean "the disk is full": exit 2, naming the path.
_FULL_DISK = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}

OUT_OF_MEMORY = (
    "out of memory ({what}); lower what each step holds: --batch-size or --prompt-batch, "
    "--max-instances, the image size (a smaller model), or use a device with more memory"
)


def _echo_error(message: str) -> None:
    """Print ``error: message`` as exactly one line (any line break left in it is escaped)."""
    typer.echo(one_line(f"error: {message}"), err=True)


def known_failure(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for a failure samtune recognises though nothing raised it as a
    samtune error: out of memory (a failed run, exit 1) and a full disk (exit 2)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        what = "GPU" if type(exc).__name__ == "OutOfMemoryError" else "host memory"
        return OUT_OF_MEMORY.format(what=what), 1
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return OUT_OF_MEMORY.format(what="device"), 1
    if isinstance(exc, OSError) and exc.errno in _FULL_DISK:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"{_FULL_DISK[exc.errno]}{where}; free some space or choose another folder", 2
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """samtune's own warnings as one ``note:`` line; others as Python prints them."""
    if issubclass(category, SamtuneWarning):
        typer.echo(one_line(f"note: {message}"), err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _command_path(failed, root) -> str:
    """``samtune serve label-studio `` for the context of a nested command (the root's own
    name is samtune's, whatever the runner calls it)."""
    names = []
    while failed is not None and failed is not root:
        names.append(failed.info_name)
        failed = failed.parent
    return " ".join(["samtune", *reversed(names)]) + " "


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
            _echo_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except _UsageError as exc:  # a bad option or value: one line, like every input error
            if type(exc).__name__ == "NoArgsIsHelpError":  # `samtune fit`-style help, not an error
                raise
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            where = _command_path(exc.ctx, ctx)
            message = exc.format_message().replace(
                "Got unexpected extra", "Too many arguments: extra"
            )
            _echo_error(f"{message} (see `{where}--help`)")
            raise typer.Exit(2) from None
        except _PATH_ERRORS as exc:  # a path the user gave that cannot be used: input, exit 2
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            _echo_error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except (MemoryError, RuntimeError, OSError) as exc:  # out of memory, disk full
            known = known_failure(exc)
            if known is None:
                raise
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            _echo_error(known[0])
            raise typer.Exit(known[1]) from None


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
        known = known_failure(exc)
        if known is not None:
            _echo_error(known[0])
            sys.exit(known[1])
        _echo_error(
            f"samtune failed with {type(exc).__name__}: {exc}. This is a samtune bug if "
            "the input was valid; rerun with --debug for the traceback and report it"
        )
        sys.exit(1)
