"""Small file helpers shared by every writer.

Three promises, kept here so that every writer keeps them:

* nothing half-written is ever left where a reader would take it for complete (outputs are
  assembled beside their destination and renamed into place);
* files get the permissions any other program would give them (``0666`` / ``0777`` less the
  umask), not ``mkstemp``'s private ``0600``;
* ``overwrite`` never removes anything samtune did not write: a folder samtune writes as a whole
  carries a manifest (:data:`MANIFEST`) of every file and folder in it, at any depth, and only a
  folder holding nothing else may be replaced. The current folder, its parents and the caller's
  protected paths (the source being exported, say) are never replaced.

And one ownership rule for every command's output folder (:func:`claim_output`, see
``docs/security.md``): samtune never replaces a file it did not write (a folder it writes into,
such as a run folder, records in :data:`RUN_MARKER` which command wrote which entry), never an
input of the same command, never writes outside the folder it was given; and a folder is
written by one command at a time (:func:`output_lock`): a second is refused, "folder in use".
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import ConfigError, InputError, MissingFileError, RunError, SamtuneWarning

MANIFEST = ".samtune-manifest.json"
RUN_MARKER = ".samtune-outputs.json"
"""In a folder samtune writes into (a run folder, an evaluation's ``--output``, a suite folder):
``{"written_by": "samtune", "entries": {name: command}}``, the entries samtune wrote there and
the command that wrote each."""
LOCK = ".samtune-lock"
"""The lock of a folder being written (inside it), or ``.<name>.samtune-lock`` beside an output
that is replaced as a whole: JSON ``{"pid", "host", "command", "started"}``, made with
``O_EXCL`` and removed when the command ends."""
STALE_AFTER_S = 24 * 3600  # temporaries of older samtune versions carry no owner: age decides


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


# --------------------------------------------------------------------------- temporaries


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24] or "host"


def _owner_tag() -> str:
    """``<host>-<pid>``: in a temporary's name, so a later write can tell whether it is stale."""
    return f"{_host()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _stale(entry: Path, name: str) -> bool:
    """Whether ``entry`` is a temporary samtune made for ``name`` whose writer is gone.

    Patterns: ``.<name>.<8 chars>.<host>-<pid>.tmp`` and ``.<name>.old-<host>-<pid>`` (stale when
    the host is this one and the process is gone); ``.<name>.<8 chars>.tmp`` and
    ``.<name>.old-<pid>`` of older samtune versions (stale after a day, or when the pid is gone).
    """
    escaped = re.escape(name)
    owned = re.fullmatch(
        rf"\.{escaped}\.(?:[a-z0-9_]{{8}}\.|old-)(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)(?:\.tmp)?",
        entry.name,
    )  # noqa: E501
    if owned:
        return owned["host"] == _host() and not _pid_alive(int(owned["pid"]))
    legacy_old = re.fullmatch(rf"\.{escaped}\.old-(?P<pid>\d+)", entry.name)
    if legacy_old:
        return not _pid_alive(int(legacy_old["pid"]))
    if re.fullmatch(rf"\.{escaped}\.[a-z0-9_]{{8}}\.tmp", entry.name):
        try:
            return time.time() - entry.lstat().st_mtime > STALE_AFTER_S
        except OSError:
            return False
    return False


def clean_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove samtune's own temporaries for ``path`` left beside it by a killed writer.

    Only names of samtune's patterns (see :func:`_stale`) whose writer is gone are removed;
    returns them.
    """
    path = Path(path)
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:  # scandir: a folder of many outputs is listed without building a Path per entry
        with os.scandir(path.parent) as listing:
            siblings = [path.parent / e.name for e in listing if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in siblings:
        if _stale(entry, path.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------- full disks


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    # torch's zip writer and safetensors report a failed write in their own words
    return any(
        marker in text
        for marker in (
            "No space left on device",
            "os error 28",
            "StorageFull",
            "unexpected pos",
            "PytorchStreamWriter failed writing",
        )  # fmt: skip
    )


def _free_space(path: Path) -> str:
    for folder in [path, *path.parents]:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        return f"{free / 2**20:.0f} MiB free"
    return "free space unknown"


def disk_full_error(path: str | Path, exc: BaseException) -> InputError | None:
    """The one-line error for a write to ``path`` that failed because its disk is full (an
    ``ENOSPC`` ``OSError``, or torch's / safetensors' report of the same); None otherwise."""
    if not _disk_full(exc):
        return None
    path = Path(path)
    return InputError(
        f"cannot write {str(path)!r}: the disk holding it is full ({_free_space(path.parent)}); "
        "nothing was left half-written. Free some space or choose a folder on another disk"
    )


@contextlib.contextmanager
def translate_disk_full(path: str | Path) -> Iterator[None]:
    """Turn a full disk while writing ``path`` into :func:`disk_full_error`'s ``InputError``."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as exc:
        error = disk_full_error(path, exc)
        if error is None:
            raise
        raise error from None


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary is ``.<name>.<random>.<host>-<pid>.tmp``; stale ones of earlier killed writes
    are removed first (:func:`clean_stale_temporaries`).

    Raises:
        InputError: ``path`` is a folder, or its folder cannot be written (read-only, a file),
            or the disk is full.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    created = _make_parent(path)
    clean_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=f".{_owner_tag()}.tmp", dir=path.parent
        )
    except OSError as exc:
        _remove_empty(created)
        raise disk_full_error(path, exc) or _not_writable(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with translate_disk_full(path):
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


def _listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative, POSIX), the manifest left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in dirs + files:
            entry = (rel / name).as_posix()
            if entry != MANIFEST:
                found.append(entry)
    return sorted(found)


def written_by_samtune(folder: str | Path) -> tuple[bool, list[str]]:
    """Whether ``folder`` was written by samtune, and the entries in it that samtune did not write.

    A folder counts as samtune's when it holds a valid :data:`MANIFEST` and every entry in it,
    at any depth, is listed there (``files``). A manifest of older samtune versions lists the
    top-level ``entries`` only: a sub-folder it names cannot be checked, so it is counted as
    not samtune's. Foreign entries are named relative to ``folder`` (a foreign folder once,
    not its content).
    """
    folder = Path(folder)
    top = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    try:
        manifest = read_json(folder / MANIFEST)
        listed = set(manifest.get("files") or [])
        entries = set(manifest["entries"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False, top
    if "files" not in manifest:  # older manifest: top-level names only
        foreign = [n for n in top if n not in entries or (folder / n).is_dir()]
        return not foreign, foreign
    foreign = []
    for entry in _listing(folder):
        if entry not in listed and not any(entry.startswith(f + "/") for f in foreign):
            foreign.append(entry)
    return not foreign, foreign


def _write_manifest(tmp: Path) -> None:
    entries = sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST)
    manifest = {"written_by": "samtune", "entries": entries, "files": _listing(tmp)}
    (tmp / MANIFEST).write_text(dump_json(manifest, indent=1) + "\n")


def check_not_input(
    path: str | Path, inputs: Iterable[str | Path], *, context: str = "", advice: str = ""
) -> None:
    """Refuse ``path`` as an output when it is one of ``inputs`` or holds one.

    Raises:
        InputError: naming the input.
    """
    resolved = Path(path).resolve()
    where = f"{str(path)!r}" + (f" ({context})" if context else "")
    for item in inputs:
        item_path = Path(item).resolve()
        if item_path == resolved or resolved in item_path.parents:
            raise InputError(
                f"refusing to replace {where}: "
                + ("it is" if item_path == resolved else f"it holds {str(item)!r},")
                + " an input of this command; "
                + (advice or "choose another output")
            )


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


def _not_a_mount_point(path: Path) -> None:
    if path.is_dir() and os.path.ismount(path):
        raise InputError(
            f"cannot write {str(path)!r} as a whole: it is a mount point, and samtune writes an "
            "output folder beside it and renames it into place; give a folder inside it "
            f"(e.g. {str(path / 'out')!r})"
        )


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``, moving an earlier ``path`` away first."""
    try:
        if path.exists():
            old = path.with_name(f".{path.name}.old-{_owner_tag()}")
            os.replace(path, old)  # an empty folder, or one check_replaceable cleared
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            _not_a_mount_point(path)
            raise InputError(
                f"cannot replace {str(path)!r}: it is in use ({exc.strerror})"
            ) from None
        raise


def _follow_link(path: Path) -> Path:
    """A symlinked output folder is written at its target: the link stays as the user made it."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_dir(
    path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` only on success.

    The finished folder carries a :data:`MANIFEST` of what was written, so that a later
    ``overwrite`` can tell samtune's folders from the user's. A symlink ``path`` is followed
    (its target is written; the link stays). The folder is locked (:func:`output_lock`) while
    it is written.

    Args:
        path: the folder to create. An empty existing folder is reused; a non-empty one is
            replaced only with ``overwrite`` and only if samtune wrote it
            (:func:`check_replaceable`).
        overwrite: allow replacing a folder samtune wrote.
        protect: paths that must survive (the command's inputs): a folder holding one of them
            is never replaced.

    Raises:
        InputError: ``path`` is a file, a mount point, cannot be written, must not be
            replaced, is being written by another command, or the disk is full.
    """
    given = Path(path)
    path = _follow_link(given)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write folder {str(given)!r}: a file of that name exists")
    replace = path.exists() and any(path.iterdir())
    if replace:
        if not overwrite:
            raise InputError(
                f"{str(given)!r} exists and is not empty; choose another folder, or pass "
                "--overwrite (overwrite=True) to replace an earlier samtune output"
            )
        check_replaceable(path, protect)
    elif path.exists():
        check_replaceable(path)  # an empty folder, but never the current one
    _not_a_mount_point(path)
    created = _make_parent(path)
    with output_lock(path, beside=True):
        clean_stale_temporaries(path)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".{_owner_tag()}.tmp",
                                        dir=path.parent))  # fmt: skip
        except OSError as exc:
            _remove_empty(created)
            raise disk_full_error(path, exc) or _not_writable(path, exc) from None
        try:
            with translate_disk_full(path):
                yield tmp
                _write_manifest(tmp)
            mode = _umask()
            os.chmod(tmp, 0o777 & ~mode)
            for sub in tmp.rglob("*"):
                if not sub.is_symlink():
                    os.chmod(sub, (0o777 if sub.is_dir() else 0o666) & ~mode)
            _swap_in(tmp, path)
            created = []
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty(created)


# --------------------------------------------------------------------------- locks

_HELD: dict[Path, int] = {}  # locks this process holds, with how many claims share each


def _lock_path(folder: Path, beside: bool) -> Path:
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}{LOCK}") if beside else folder / LOCK


def _read_lock(lock: Path) -> dict:
    try:
        data = read_json(lock)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(info: dict) -> str:
    if not info:
        return "another samtune command"
    return (
        f"samtune {info.get('command') or 'command'} (process {info.get('pid')} on "
        f"{info.get('host')}, since {info.get('started')})"
    )


def _create_lock(lock: Path, command: str) -> bool:
    """Make ``lock`` with ``O_EXCL``; False when it exists already."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    except FileExistsError:
        return False
    except OSError as exc:
        raise disk_full_error(lock, exc) or _not_writable(lock, exc) from None
    info = {"pid": os.getpid(), "host": _host(), "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    with os.fdopen(fd, "w") as fh:
        fh.write(dump_json(info) + "\n")
    return True


def _take_over(lock: Path, stale: dict) -> bool:
    """Move a stale lock away and check it was the one judged stale (not a newer one)."""
    moved = lock.with_name(f"{lock.name}.stale-{_owner_tag()}")
    try:
        os.replace(lock, moved)
    except FileNotFoundError:
        return True  # its owner just released it
    if _read_lock(moved) != stale:  # another process took it over first: give it back
        with contextlib.suppress(OSError):
            os.replace(moved, lock)
        return False
    moved.unlink()
    return True


def _acquire(lock: Path, folder: Path, command: str) -> None:
    for _ in range(3):
        if _create_lock(lock, command):
            return
        info = _read_lock(lock)
        pid = info.get("pid")
        if info.get("host") == _host() and isinstance(pid, int) and pid == os.getpid():
            return  # held by this process already (a command inside another)
        if info.get("host") == _host() and isinstance(pid, int) and not _pid_alive(pid):
            if _take_over(lock, info):
                warnings.warn(
                    f"{str(folder)!r} was locked by {_holder(info)}, which is no longer "
                    "running; samtune took the lock over",
                    SamtuneWarning,
                    stacklevel=4,
                )
            continue
        break
    raise InputError(
        f"folder in use: {str(folder)!r} is being written by {_holder(_read_lock(lock))}; wait "
        f"for it to finish or choose another output folder (if no such process runs, delete "
        f"{str(lock)!r})"
    )


@contextlib.contextmanager
def output_lock(folder: str | Path, *, beside: bool = False, command: str = "") -> Iterator[Path]:
    """Hold the lock of the output ``folder`` for the block: one command writes it at a time.

    The lock (:data:`LOCK`) is inside ``folder`` (created if missing, and removed again if the
    block left it empty), or with ``beside=True`` next to it as ``.<name>.samtune-lock`` (for
    outputs replaced as a whole). A lock whose process is gone on this host is taken over with
    a :class:`~samtune.errors.SamtuneWarning`. Claims in one process nest.

    Raises:
        InputError: "folder in use": another live process holds the lock.
    """
    folder = Path(folder)
    lock = _lock_path(folder, beside)
    created = _make_parent(lock)
    key = Path(os.path.realpath(lock))
    try:
        if key not in _HELD:
            _acquire(lock, folder, command)
        _HELD[key] = _HELD.get(key, 0) + 1
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield lock
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
            if _read_lock(lock).get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    lock.unlink()
        _remove_empty(created)


# --------------------------------------------------------------------------- output folders


def is_main_process() -> bool:
    """Whether this is the process that writes (rank 0 of a ``torchrun`` / ``accelerate
    launch`` group, or a single process), read from the environment so that no process group
    is started just to ask."""
    return os.environ.get("RANK", "0") == "0"


def _read_marker(folder: Path) -> dict[str, str]:
    try:
        data = read_json(folder / RUN_MARKER)
        entries = data["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def _write_marker(folder: Path, entries: dict[str, str]) -> None:
    path = folder / RUN_MARKER
    if not entries:
        with contextlib.suppress(OSError):
            path.unlink()
        return
    with atomic_write(path) as tmp:
        tmp.write_text(dump_json({"written_by": "samtune", "entries": entries}, indent=1) + "\n")


def _plain_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"an output name is one entry of its folder, not {name!r}")
    return name


def check_output(
    folder: str | Path,
    *,
    command: str,
    names: Iterable[str],
    inputs: Iterable[str | Path] = (),
    option: str = "--output",
) -> None:
    """The ownership rule for a folder ``command`` writes ``names`` into; writes nothing.

    An entry may be written when it does not exist, or when :data:`RUN_MARKER` records that
    ``command`` wrote it (a rerun or ``--resume`` of the same command). An input of the command
    is never written, unless it is that command's own record in that folder (a run's
    ``config.yaml`` given back with ``-c``).

    Raises:
        InputError: ``folder`` is a file; an entry is an input of the command, or exists and
            samtune did not write it there with this command (every such entry is named).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {str(folder)!r} is a file; give a folder")
    marker = _read_marker(folder) if folder.is_dir() else {}
    resolved_inputs = [(item, Path(item).resolve()) for item in inputs]
    foreign, others = [], {}
    for name in map(_plain_name, names):
        target = (folder / name).resolve()
        own = marker.get(name) == command
        for item, resolved in resolved_inputs:
            if (resolved == target and not own) or target in resolved.parents:
                raise InputError(
                    f"refusing to write {str(folder / name)!r}: "
                    + ("it is" if resolved == target else f"it holds {str(item)!r},")
                    + f" an input of this command; choose another {option} folder"
                )
        if (folder / name).exists() or (folder / name).is_symlink():
            if name not in marker:
                foreign.append(name)
            elif not own:
                others.setdefault(marker[name], []).append(name)
    if foreign or others:
        parts = [f"samtune did not write {', '.join(foreign)} there"] if foreign else []
        parts += [f"samtune {cmd} wrote {', '.join(n)} there" for cmd, n in others.items()]
        them = "it" if len(foreign) + sum(map(len, others.values())) == 1 else "them"
        raise InputError(
            f"refusing to write into {str(folder)!r}: {'; '.join(parts)}, and samtune {command} "
            f"would replace {them}; choose another {option} folder, or move {them} away"
        )


@contextlib.contextmanager
def claim_output(
    folder: str | Path,
    *,
    command: str,
    names: Iterable[str],
    inputs: Iterable[str | Path] = (),
    option: str = "--output",
    lock: bool = True,
) -> Iterator[Path]:
    """Check the ownership rule (:func:`check_output`), lock ``folder`` and record ``names``.

    For the block, ``folder`` is locked (:func:`output_lock`; ``lock=False``: the caller only
    records, e.g. a process other than the main one) and :data:`RUN_MARKER` lists ``names``
    as written by ``command``; at the end, names that were not written are dropped from it,
    and a folder the claim created is removed again if nothing was written.

    Raises:
        InputError: see :func:`check_output`; "folder in use" (another command writes there).
    """
    folder = Path(folder)
    names = list(names)
    check_output(folder, command=command, names=names, inputs=inputs, option=option)
    if not lock:
        yield folder
        return
    created = _make_parent(folder / LOCK)
    try:
        with output_lock(folder, command=command):
            check_output(folder, command=command, names=names, inputs=inputs, option=option)
            marker = _read_marker(folder)
            _write_marker(folder, {**marker, **{n: command for n in names}})
            try:
                yield folder
            finally:
                marker = _read_marker(folder)
                kept = {n: c for n, c in marker.items() if (folder / n).exists()}
                if kept != marker:
                    _write_marker(folder, kept)
    finally:
        _remove_empty(created)


# --------------------------------------------------------------------------- safetensors


def write_safetensors(tensors: Mapping, path: str | Path, metadata: dict | None = None) -> None:
    """``safetensors.torch.save_file``, byte-deterministic: the header's metadata keys sorted.

    safetensors keeps metadata in a hash map whose order changes from process to process, so
    two saves of the same tensors would differ in bytes; samtune's files do not.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with translate_disk_full(path):
        save_file(dict(tensors), str(path), metadata=metadata)
        _sort_header(path)


def _sort_header(path: Path) -> None:
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        if len(text) == size:
            fh.seek(8)
            fh.write(text)
            return
        data = fh.read()
    with open(path, "wb") as fh:  # the escaping differed: write the file again
        fh.write(len(text).to_bytes(8, "little") + text + data)


# ---------------------------------------------------------------------------- reading
#
# Every JSON and YAML file samtune reads goes through the readers below, so that one set of
# limits holds everywhere (docs/security.md, "Limits on what samtune reads"): a crafted file
# is refused with one line naming the file and the limit, never read forever, never expanded
# until memory runs out, never parsed until Python's recursion limit breaks.

SMALL_FILE_LIMIT = 16 * 2**20
"""Bytes samtune reads from a config, metrics, sidecar or prompts file (16 MiB)."""
DATA_FILE_LIMIT = 4 * 2**30
"""Bytes samtune reads from a dataset's annotation file (4 GiB; COCO's largest are ~0.5 GB)."""
MAX_DEPTH = 100
"""How deep JSON arrays/objects and YAML collections may nest."""
MAX_YAML_NODES = 100_000
"""How many values a YAML document may hold once its aliases (``*name``) are expanded."""


def _size(n: int) -> str:
    return f"{n // 2**30} GiB" if n >= 2**30 else f"{n // 2**20} MiB"


def read_text(
    path: str | Path,
    *,
    what: str = "file",
    limit: int = SMALL_FILE_LIMIT,
    error: type[Exception] = InputError,
) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped), read only if it is safe to.

    Refused, with ``error`` naming ``what`` and the file: a path that is not a regular file (a
    device such as ``/dev/zero``, a FIFO, a socket; the null device reads as empty), a file of
    more than ``limit`` bytes (at most ``limit + 1`` are read), text that is not UTF-8.

    Raises:
        MissingFileError: ``path`` does not exist.
    """
    path = Path(path)
    where = f"{what} {str(path)!r}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{where} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{where} is a folder; give a file")
    if not stat.S_ISREG(info.st_mode):
        if os.path.exists(os.devnull) and os.path.samefile(path, os.devnull):
            return ""
        raise error(f"{where} is not a regular file (a device, FIFO or socket); give a file")
    if info.st_size > limit:
        raise error(f"{where} is {info.st_size} bytes, more than the {_size(limit)} samtune reads")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) > limit:  # it grew while we looked
        raise error(f"{where} is more than the {_size(limit)} samtune reads")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


_JSON_KEEP = b'[]{}"'
_JSON_DROP = bytes(i for i in range(256) if i not in _JSON_KEEP)
_JSON_ESCAPE = re.compile(rb"\\.", re.S)
_JSON_CHUNK = 2**24  # bytes of brackets and quotes scanned at a time


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (brackets inside strings skipped).

    Linear time at C speed, so that a dataset's large annotation file costs a fraction of its
    parse: escapes are cut out, then everything but brackets and quotes, then the running depth
    outside strings is a cumulative sum, in chunks of bounded memory.
    """
    import numpy as np

    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        data = _JSON_ESCAPE.sub(b"", data)
    data = data.translate(None, _JSON_DROP)
    deepest = level = quotes = 0
    chunk = _JSON_CHUNK
    for start in range(0, len(data), chunk):
        codes = np.frombuffer(
            data, dtype=np.uint8, count=min(chunk, len(data) - start), offset=start
        )
        inside = (np.cumsum(codes == ord('"'), dtype=np.int64) + quotes) % 2 == 1
        steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
        steps[inside | (codes == ord('"'))] = 0
        running = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(running.max(initial=level)))
        level = int(running[-1])
        quotes = (quotes + int(np.count_nonzero(codes == ord('"')))) % 2
    return deepest


def parse_json(
    text: str, where: str, error: type[Exception] = InputError, *, advice: str = ""
) -> object:
    """JSON ``text`` (from ``where``, named in messages), no deeper than :data:`MAX_DEPTH`;
    ``advice`` ends the message about text that is not JSON."""
    too_deep = f"{where} nests arrays/objects deeper than {MAX_DEPTH} levels, the limit"
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and json_depth(text) > MAX_DEPTH:
        raise error(too_deep)
    try:
        return json.loads(text)
    except RecursionError:  # the scan above is the limit; this is the interpreter's backstop
        raise error(too_deep) from None
    except ValueError as exc:
        raise error(f"{where} is not valid JSON ({exc}){advice}") from None


def read_json(
    path: str | Path,
    *,
    what: str = "JSON file",
    limit: int = SMALL_FILE_LIMIT,
    error: type[Exception] = InputError,
) -> object:
    """The JSON value in ``path``, within :func:`read_text`'s and :func:`parse_json`'s limits."""
    text = read_text(path, what=what, limit=limit, error=error)
    return parse_json(text, f"{what} {str(path)!r}", error)


def read_json_object(
    path: str | Path,
    error: type[Exception] = InputError,
    *,
    what: str = "JSON file",
    limit: int = SMALL_FILE_LIMIT,
) -> dict:
    """A JSON file that must hold an object; ``error`` (naming the file) otherwise."""
    data = read_json(path, what=what, limit=limit, error=error)
    if not isinstance(data, dict):
        raise error(f"{str(path)!r} must hold a JSON object; found {type(data).__name__}")
    return data


def dump_json(data: object, **options: object) -> str:
    """``data`` as JSON text: the one JSON writer, so a file samtune writes is always JSON.

    ``NaN`` and infinities are not JSON (other readers refuse them), so they are never
    written: :class:`~samtune.errors.RunError` names where the value sits (``metrics.miou``).
    """
    try:
        return json.dumps(data, allow_nan=False, **options)  # type: ignore[arg-type]
    except ValueError:
        where = _non_finite(data, "") or "a value"
        raise RunError(
            f"the run produced a non-finite number (NaN or infinity) at {where}; it cannot be "
            "written as JSON. The run failed: lower the learning rate or check the data"
        ) from None


def _non_finite(data: object, where: str) -> str | None:
    """The dotted path of the first NaN or infinity in ``data``, or None."""
    stack = [(data, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return at or "the top level"
        if isinstance(value, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(value))
    return None


def _yaml_error(path: Path, exc: Exception) -> str:
    """A YAML parser error as one line: file, line:column, problem."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    begun = getattr(exc, "context_mark", None)
    if context and begun is not None and (mark is None or begun.line != mark.line):
        context += f" that starts at line {begun.line + 1}, column {begun.column + 1}"
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"config file {str(path)!r} is not valid YAML{at}: {problem}" + (
        f" ({context})" if context else ""
    )


def parse_yaml(text: str, where: str, error: type[Exception] = ConfigError) -> object:
    """YAML ``text`` read safely (``yaml.safe_load``) within :data:`MAX_DEPTH` and
    :data:`MAX_YAML_NODES`; ``error`` naming ``where`` and the limit otherwise.

    Aliases are counted as what they expand to, before anything is built, so a "billion
    laughs" document is refused at once; an alias that refers to itself is refused too.

    Raises:
        yaml.YAMLError: the text is not YAML (the caller words it).
    """
    loader = _limited_loader()(text)
    loader.where, loader.error = where, error
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@functools.cache
def _limited_loader() -> type:
    """``yaml.SafeLoader`` that refuses deep nesting and alias expansion past the limits."""
    import yaml

    class LimitedLoader(yaml.SafeLoader):
        where = "YAML text"
        error: type[Exception] = ConfigError
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise self.error(
                        f"{self.where} nests deeper than {MAX_DEPTH} levels, the limit (line "
                        f"{mark.line + 1})"
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def compose_document(self):  # type: ignore[no-untyped-def]
            node = super().compose_document()
            if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise self.error(
                    f"{self.where} expands to more than {MAX_YAML_NODES} values through its "
                    "aliases (*name), the limit (or an alias refers to itself); write the "
                    "values out"
                )
            return node

    return LimitedLoader


def _children(node: object) -> list:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []  # a scalar
    return [part for item in value for part in (item if isinstance(item, tuple) else (item,))]


def _expanded_size(root: object, limit: int) -> int:
    """How many nodes a composed YAML tree holds with every alias expanded, capped at
    ``limit + 1`` (also for a cycle). Iterative, each shared node counted once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[key] = min(total, limit + 1)
        elif key in open_nodes:
            return limit + 1  # an alias inside the node it names
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)]


def read_yaml_mapping(
    path: str | Path, what: str = "options", *, limit: int = SMALL_FILE_LIMIT
) -> dict:
    """Read a YAML file that must hold a mapping (a config file); clear errors otherwise.

    An empty file (the null device too) is an empty mapping. The limits of :func:`read_text`
    and :func:`parse_yaml` apply.
    """
    import yaml

    path = Path(path)
    text = read_text(path, what="config file", limit=limit, error=ConfigError)
    try:
        data = parse_yaml(text, f"config file {str(path)!r}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of {what}; found {type(data).__name__}"
        )
    return data


def join_inside(
    root: str | Path, relative: object, *, what: str = "file name", links_may_leave: bool = False
) -> Path:
    """``root / relative`` for a name read from a data file, refusing one that leaves ``root``.

    A name from a downloaded annotation file (a COCO ``file_name``, an archive member) is
    untrusted input. Refused: a name that is not a non-empty string, holds a NUL byte, is
    absolute (``/x``, ``\\\\host\\x``), starts with a drive letter (``C:``), has a ``..``
    part (backslashes count as separators), or resolves outside ``root`` through a symlink
    already on disk (unless ``links_may_leave``: a reader of a dataset's images follows the
    links its owner made, as any image folder of symlinks into a shared store has). ``.``
    parts and repeated separators are dropped.

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
    if links_may_leave:
        return joined
    if not joined.resolve().is_relative_to(root.resolve()):
        raise refuse("leads outside the folder through a symbolic link")
    return joined
