"""Small file helpers shared by every writer.

Three promises, kept here so that every writer keeps them:

* nothing half-written is ever left where a reader would take it for complete (outputs are
  assembled beside their destination and renamed into place);
* files get the permissions any other program would give them (``0666`` / ``0777`` less the
  umask), not ``mkstemp``'s private ``0600``;
* ``overwrite`` never removes anything samtune did not write: a folder samtune writes carries a
  manifest (:data:`MANIFEST`) of its entries, and only a folder whose entries are all listed
  there may be replaced. The current folder, its parents and the caller's protected paths
  (the source being exported, say) are never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import ConfigError, InputError, MissingFileError

MANIFEST = ".samtune-manifest.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _not_writable(path: Path, exc: OSError) -> InputError:
    reason = exc.strerror or str(exc)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir() and parent != path:
            reason = f"{str(parent)!r} is a file, not a folder"
            break
    return InputError(f"cannot write {str(path)!r}: {reason}")


def _make_parent(path: Path) -> list[Path]:
    """Create ``path``'s missing parent folders; returns them, outermost first."""
    created = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this write created, innermost first, if nothing else went in."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Raises:
        InputError: ``path`` is a folder, or its folder cannot be written (read-only, a file).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    created = _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
        created = []
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        _remove_empty(created)


def written_by_samtune(folder: str | Path) -> tuple[bool, list[str]]:
    """Whether ``folder`` was written by samtune, and the entries in it that samtune did not write.

    A folder counts as samtune's when it holds a valid :data:`MANIFEST` and every entry in it
    is listed there.
    """
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    try:
        listed = set(json.loads((folder / MANIFEST).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return False, entries
    foreign = [name for name in entries if name not in listed]
    return not foreign, foreign


def check_replaceable(
    path: Path,
    protect: Iterable[str | Path] = (),
    *,
    context: str = "",
    advice: str = "--overwrite only replaces folders samtune wrote. Choose another folder or "
    "empty it yourself",
) -> None:
    """Refuse to replace ``path`` unless samtune wrote it and nothing precious is inside it.

    An empty folder may be replaced. ``context`` (e.g. "the results for x.png") follows the
    path in messages; ``advice`` ends the message about entries samtune did not write.

    Raises:
        InputError: ``path`` is the current folder or one of its parents, holds (or is) one of
            ``protect``, or holds entries samtune did not write (they are named).
    """
    where = f"{str(path)!r}" + (f" ({context})" if context else "")
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(
            f"refusing to replace {where}: it is the current folder or one of its parents; "
            "choose a new folder for the output"
        )
    for item in protect:
        item = Path(item).resolve()
        if item == resolved or resolved in item.parents:
            raise InputError(
                f"refusing to replace {where}: it holds {str(item)!r}, the input of this "
                "command; choose another output folder"
            )
    if not any(path.iterdir()):
        return
    ours, foreign = written_by_samtune(path)
    if not ours:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise InputError(
            f"refusing to replace {where}: samtune did not write "
            + (f"{shown} there" if foreign else "that folder (it has no samtune manifest)")
            + f"; {advice}"
        )


@contextlib.contextmanager
def atomic_dir(
    path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` only on success.

    The finished folder carries a :data:`MANIFEST` of what was written, so that a later
    ``overwrite`` can tell samtune's folders from the user's.

    Args:
        path: the folder to create. An empty existing folder is reused; a non-empty one is
            replaced only with ``overwrite`` and only if samtune wrote it
            (:func:`check_replaceable`).
        overwrite: allow replacing a folder samtune wrote.
        protect: paths that must survive (the command's inputs): a folder holding one of them
            is never replaced.

    Raises:
        InputError: ``path`` is a file, cannot be written, or must not be replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write folder {str(path)!r}: a file of that name exists")
    replace = path.exists() and any(path.iterdir())
    if replace:
        if not overwrite:
            raise InputError(
                f"{str(path)!r} exists and is not empty; choose another folder, or pass "
                "--overwrite (overwrite=True) to replace an earlier samtune output"
            )
        check_replaceable(path, protect)
    elif path.exists():
        check_replaceable(path)  # an empty folder, but never the current one
    created = _make_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        _remove_empty(created)
        raise _not_writable(path, exc) from None
    try:
        yield tmp
        entries = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
        (tmp / MANIFEST).write_text(
            json.dumps({"written_by": "samtune", "entries": entries}, indent=1) + "\n"
        )
        mode = _umask()
        os.chmod(tmp, 0o777 & ~mode)
        for sub in tmp.rglob("*"):
            if not sub.is_symlink():
                os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mode)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)  # an empty folder, or one check_replaceable cleared
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        created = []
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)


def read_json_object(path: str | Path, error: type[Exception] = InputError) -> dict:
    """A JSON file that must hold an object; ``error`` (naming the file) otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{str(path)!r} must hold a JSON object; found {type(data).__name__}")
    return data


def read_yaml_mapping(path: str | Path, what: str = "options") -> dict:
    """Read a YAML file that must hold a mapping (a config file); clear errors otherwise.

    An empty file (``/dev/null`` too) is an empty mapping.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give a YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of {what}; found {type(data).__name__}"
        )
    return data


def join_inside(root: str | Path, relative: object, *, what: str = "file name") -> Path:
    """``root / relative`` for a name read from a data file, refusing one that leaves ``root``.

    A name from a downloaded annotation file (a COCO ``file_name``, an archive member) is
    untrusted input. Refused: a name that is not a non-empty string, holds a NUL byte, is
    absolute (``/x``, ``\\\\host\\x``), starts with a drive letter (``C:``), has a ``..``
    part (backslashes count as separators), or resolves outside ``root`` through a symlink
    already on disk. ``.`` parts and repeated separators are dropped.

    Returns:
        The joined path (not resolved: ``root`` keeps the form the caller gave).

    Raises:
        DataError: naming the file name and what is wrong with it (also as ``.reason``).
    """
    from .errors import DataError

    def refuse(why: str) -> DataError:
        error = DataError(
            f"{what} {relative!r} {why}; a name in a data file must be a relative path "
            f"inside {str(root)!r}: fix the file or re-download it"
        )
        error.reason = why  # for callers that word their own message
        return error

    if not isinstance(relative, str) or not relative.strip():
        raise refuse("is not a non-empty string")
    if "\x00" in relative:
        raise refuse("contains a NUL byte")
    text = relative.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if text.startswith("/"):
        raise refuse("is an absolute path")
    if parts and len(parts[0]) >= 2 and parts[0][1] == ":" and parts[0][0].isalpha():
        raise refuse("starts with a drive letter")
    if ".." in parts:
        raise refuse("has a '..' part")
    if not parts:
        raise refuse("names no file")
    root = Path(root)
    joined = root.joinpath(*parts)
    base = root.resolve()
    if not joined.resolve().is_relative_to(base):
        raise refuse("leads outside the folder through a symbolic link")
    return joined
