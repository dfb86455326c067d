"""Resumable, checksum-verified downloads and safe archive extraction for dataset recipes.

- :func:`download_file`: HTTP(S) with ``Range`` resume from ``<file>.part``, a tqdm progress
  bar (quiet when stderr is not a terminal or ``quiet=True``), the expected size checked
  before and while downloading, MD5/SHA-256 verification with one automatic retry from
  scratch on a mismatch.
- :func:`safe_extract`: zip and tar(.gz) archives; refuses members that would land outside
  the target folder (absolute paths, ``..``), symlinks, hard links and device files; reads
  ZipCrypto-encrypted zips with a password, and says so plainly for AES-encrypted ones.
- :func:`download_dataset`: a recipe's files, then extraction. TACO's images come from the
  Zenodo archive ``TACO.zip`` (``route="archive"``, the default) or one by one from each
  image's URL in ``annotations.json`` (``route="per-image"``); either way the images listed
  but absent are counted and refused unless ``allow_missing=True``.
- :func:`require_images`: the check that every image an annotation file lists is on disk,
  for loaders too.

URLs can be redirected to a mirror (or a local test server) by the recipe's environment
variable (``SAMTUNE_TRASHCAN_URL``, ``SAMTUNE_ZEROWASTE_URL``, ``SAMTUNE_TACO_URL`` for TACO's
annotation file, ``SAMTUNE_TACO_ARCHIVE_URL`` for ``TACO.zip``) or by the ``urls`` argument.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, DataError, MissingFileError, OfflineError, SamtuneWarning
from ..io import atomic_write, dump_json, join_inside, read_json
from .coco import read_annotations
from .images import load_image
from .recipes import Recipe, RemoteFile, _fill, get_recipe
from .synthetic import ensure_demo_dataset

CHUNK = 1 << 16
USER_AGENT = "samtune-data/0.1 (+https://github.com/samtune)"

# What the publishers state about their files (record pages, 2026-12): checksums and sizes
# are verified whenever a file comes from the recipe's URL or its mirror variable.
PUBLISHED: dict[str, dict[str, str | int]] = {
    # https://zenodo.org/records/6412647: the record lists MD5 and size of each file
    "zerowaste-f-final.zip": {"md5": "e26e31a58080bca6782dca0e56074c5d", "size": 7_518_242_799},
    # https://zenodo.org/records/3587843 (DOI 10.5281/zenodo.3587843)
    "TACO.zip": {"md5": "e9149407d883e21a8d224feef8210920"},
    # pedropro/TACO data/annotations.json, unchanged since December 2019
    "data/annotations.json": {
        "sha256": "ac1ec605c9e1fcda767970de3457c69b4a43b62c02aca8c4c80f51d1b5ae8449"
    },
}

TACO_ARCHIVE = RemoteFile(
    url="https://zenodo.org/records/3587843/files/TACO.zip?download=1",
    filename="TACO.zip",
    env="SAMTUNE_TACO_ARCHIVE_URL",
)
TACO_ROUTES = ("archive", "per-image")

# Where each dataset's authors publish the password of their encrypted archives.
PASSWORD_SOURCES = {
    "zerowaste": "the ZeroWaste authors publish it on the Zenodo record page "
    "(https://zenodo.org/records/6412647) and in https://github.com/dbash/zerowaste/issues/3",
}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256`` or ``md5``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, md5: str | None, sha256: str | None, size: int | None = None) -> str | None:
    """Why ``path`` fails its size or checksums, or None when it passes (or none is known)."""
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes (expected {size})"
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo} {got} (expected {want})"
    return None


def _progress(total: int | None, initial: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=disable,
        leave=False,
    )


def download_file(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    quiet: bool = False,
    retries: int = 1,
    timeout: float = 60.0,
    name: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download.

    Bytes go to ``dest + ".part"``; an interrupted download is resumed from there with an
    HTTP ``Range`` request (restarted when the server ignores it). ``size`` (bytes, when the
    publisher states it) is compared with what the server offers before any byte is
    written, and the transfer stops if it grows past it. A ``dest`` shorter than ``size``
    (a truncated copy) is resumed like a partial download; any other ``dest`` that fails
    verification is reported and left alone (it may not be samtune's). The downloaded file is
    verified against ``size``/``md5``/``sha256`` when given, then renamed into place, so
    ``dest`` exists only when complete. A mismatch discards the download and retries from
    scratch ``retries`` times before raising.

    ``name`` is the file's name in the messages' ``--checksum NAME=...`` hint (default: the
    file name of ``dest``).

    Raises:
        OfflineError: the host cannot be reached (the partial file is kept for a later resume).
        DataError: an HTTP error, a size the server offers that is not ``size``, or a
            checksum that does not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file() and size is not None and dest.stat().st_size < size:
        if not part.is_file() or part.stat().st_size < dest.stat().st_size:
            os.replace(dest, part)  # a truncated copy: resume it rather than start again
    if dest.is_file():
        bad = _check(dest, md5, sha256, size)
        if bad is None:
            return dest
        raise DataError(  # it may be a file samtune did not write: never deleted
            f"{str(dest)!r} is there but is not the published file: {bad}; move it away and "
            f"re-run to download it, or pass --checksum {name or dest.name}=md5:<hex> to use "
            "this copy"
        )
    if size is not None and part.is_file() and part.stat().st_size > size:
        part.unlink()  # longer than the published file: it cannot be a prefix of it
    for attempt in range(retries + 1):
        _fetch(url, part, quiet=quiet, timeout=timeout, desc=dest.name, size=size)
        bad = _check(part, md5, sha256, size)
        if bad is None:
            os.replace(part, dest)
            return dest
        part.unlink()
        if attempt == retries:
            raise DataError(
                f"download of {url} is corrupt: {bad}; the damaged file was deleted. Retry "
                f"`samtune data download`, or download it by hand to {str(dest)!r}"
            )
    raise AssertionError("unreachable")


def _offered_total(response, offset: int, status: int) -> int | None:
    """The full size of the file the server offers, from Content-Range or Content-Length."""
    match = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range") or "")
    if status == 206 and match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    return (offset if status == 206 else 0) + int(length)


def _open(url: str, offset: int, timeout: float):
    """The server's response for ``url`` from byte ``offset``; None when nothing is left."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part file is complete
            return None
        raise DataError(
            f"{url} answered HTTP {exc.code} ({exc.reason}); the file may have moved: check "
            "the dataset's page (docs/datasets.md) or set the recipe's URL variable to a mirror"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OfflineError(
            f"cannot reach {url} ({reason}); check the network connection or proxy, then "
            "re-run the command (the download resumes where it stopped)"
        ) from None


def _fetch(
    url: str, part: Path, *, quiet: bool, timeout: float, desc: str, size: int | None = None
) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return
    with response:
        status = getattr(response, "status", 200)
        if status != 206:
            offset = 0
        total = _offered_total(response, offset, status)
        if size is not None and total is not None and total != size:
            raise DataError(
                f"{url} offers {total} bytes, but the publisher states {size} bytes for "
                f"{desc}; the file has changed or the URL points elsewhere: check the "
                "dataset's page, or pass --checksum for the new file"
            )
        with (
            open(part, "ab" if offset else "wb") as fh,
            _progress(total, offset, desc, quiet) as bar,
        ):
            _copy(response, fh, bar, url, size)
        if total is not None and part.stat().st_size < total:
            raise OfflineError(
                f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                "re-run the command to resume"
            )


def _copy(response, fh, bar, url: str, size: int | None) -> None:
    try:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                return
            fh.write(chunk)
            bar.update(len(chunk))
            if size is not None and fh.tell() > size:
                raise DataError(
                    f"download of {url} grew past the publisher's size of {size} bytes; "
                    "the file has changed or the URL points elsewhere: check the dataset's page"
                )
    except (OSError, urllib.error.URLError) as exc:
        raise OfflineError(
            f"download of {url} was interrupted after {fh.tell()} bytes ({exc}); "
            "re-run the command to resume"
        ) from None


# --------------------------------------------------------------------------- extraction

AES = 99  # the compression method WinZip AES encryption records in a zip member


def _safe_member(name: str, archive: Path, folder: Path) -> PurePosixPath | None:
    """A member's path inside ``folder`` (via :func:`join_inside`); None for ``./``-only names."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts and not name.startswith(("/", "\\")):
        return None  # "./" (tar's entry for the archive's own root): nothing to create
    try:
        joined = join_inside(folder, name, what="member")
    except DataError as exc:
        why = getattr(exc, "reason", exc)
        raise DataError(
            f"archive {str(archive)!r} contains the unsafe path {name!r} ({why}), which would "
            "be written outside the target folder; refusing to extract it"
        ) from None
    return PurePosixPath(joined.relative_to(folder).as_posix())


def _special(archive: Path, name: str) -> DataError:
    return DataError(
        f"archive {str(archive)!r} member {name!r} is a link or special file; refusing to "
        "extract it"
    )


def _check_encryption(
    zf: zipfile.ZipFile, archive: Path, password: str | None, password_hint: str
) -> None:
    """Refuse, before anything is written, an archive samtune cannot decrypt."""
    encrypted = [i for i in zf.infolist() if i.flag_bits & 0x1]
    if not encrypted:
        return
    if any(i.compress_type == AES for i in encrypted):
        raise DataError(
            f"archive {str(archive)!r} is AES-encrypted, which Python's zipfile cannot read "
            "(it reads only ZipCrypto); extract it with 7-Zip (`7z x`) into the dataset folder "
            "and load the extracted files"
        )
    if password is None:
        raise DataError(
            f"archive {str(archive)!r} is encrypted (password-protected); pass --password "
            f"(or SAMTUNE_DATA_PASSWORD): {password_hint}"
        )
    try:
        with zf.open(encrypted[0], pwd=password.encode()) as fh:
            while fh.read(1 << 20):
                pass
    except RuntimeError:  # zipfile's "Bad password for file ..."
        raise _wrong_password(archive, password_hint) from None
    except zipfile.BadZipFile:  # the 1-in-256 wrong password that passes the header check
        raise _wrong_password(archive, password_hint) from None


def _wrong_password(archive: Path, password_hint: str) -> DataError:
    return DataError(
        f"wrong password for the encrypted archive {str(archive)!r}; check the --password "
        f"value: {password_hint}"
    )


def _extract_zip(
    archive: Path,
    tmp: Path,
    rename: Callable[[str], str | None],
    password: str | None,
    password_hint: str,
) -> None:
    with zipfile.ZipFile(archive) as zf:
        _check_encryption(zf, archive, password, password_hint)
        chosen = []
        for info in zf.infolist():
            _safe_member(info.filename, archive, tmp)
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode not in (0o100000, 0o040000):
                raise _special(archive, info.filename)
            name = rename(info.filename)
            path = _safe_member(name, archive, tmp) if name is not None else None
            if path is not None:
                chosen.append((info, path))
        pwd = password.encode() if password is not None else None
        for info, name in chosen:
            out = tmp.joinpath(*name.parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info, pwd=pwd) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)


def _extract_tar(archive: Path, tmp: Path, rename: Callable[[str], str | None]) -> None:
    with tarfile.open(archive) as tf:
        chosen = []
        for m in tf.getmembers():
            _safe_member(m.name, archive, tmp)
            if not (m.isfile() or m.isdir()):
                raise _special(archive, m.name)
            name = rename(m.name)
            path = _safe_member(name, archive, tmp) if name is not None else None
            if path is not None:
                m.name = str(path)
                chosen.append(m)
        tf.extractall(tmp, members=chosen, filter="data")


class CorruptArchiveError(DataError):
    """An archive that cannot be read to its end: truncated or damaged."""

    def __init__(self, archive: Path, detail: object, redo: str = "") -> None:
        redo = redo or (
            "move it away and re-run `samtune data download`, which downloads it again "
            "(a download it interrupted resumes)"
        )
        super().__init__(f"archive {str(archive)!r} is truncated or corrupt ({detail}); {redo}")
        self.archive, self.detail = archive, detail


def _corrupt(archive: Path, detail: object) -> DataError:
    return CorruptArchiveError(archive, detail)


def safe_extract(
    archive: str | Path,
    target: str | Path,
    *,
    rename: Callable[[str], str | None] | None = None,
    password: str | None = None,
    password_hint: str = "the dataset's publisher gives it on its download page",
    merge: bool = False,
) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``target``, refusing anything unsafe.

    Every member is checked before anything is written: paths must stay inside ``target``;
    symlinks, hard links and device/FIFO entries are refused. Extraction goes to a temporary
    folder inside ``target`` and is moved into place at the end.

    Args:
        rename: member name -> path inside ``target`` (``/``-separated), or None to skip the
            member; the result is checked like a member name. Default: every member as is.
        password: for ZipCrypto-encrypted zips (checked on the first encrypted member before
            anything is extracted). AES-encrypted zips are refused: Python cannot read them.
        password_hint: where the password is published, for the messages.
        merge: merge file by file into folders that already exist (TACO's ``data/``, which
            may hold the annotation file and images fetched one by one): files not there are
            added, identical ones left, and a different file samtune did not extract is kept
            (a warning counts them). Default: only whole top-level entries are placed.

    Returns:
        The top-level paths created in ``target``.

    Raises:
        DataError: an unsafe member, an encrypted archive without (or with a wrong)
            password, or a file that is not a readable archive (truncated, corrupt).
    """
    archive, target = Path(archive), Path(target)
    rename = rename or (lambda name: name)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, rename, password, password_hint)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, rename)
        else:
            raise _corrupt(archive, "not a zip or tar archive")
        return (_merge_into if merge else _move_into)(tmp, target, archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise _corrupt(archive, exc) from None
    except NotImplementedError as exc:  # e.g. Deflate64, which zipfile cannot decompress
        raise DataError(
            f"archive {str(archive)!r} uses a format Python's zipfile cannot read ({exc}); "
            "extract it with 7-Zip or unzip into the dataset folder and load the extracted files"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_record(record: Path) -> set[str]:
    try:
        return set(read_json(record, what="extraction record")) if record.is_file() else set()
    except (ValueError, TypeError):
        return set()


def _merge_into(tmp: Path, target: Path, archive: Path) -> list[Path]:
    """Move every extracted file into ``target`` one by one, never replacing another's file.

    The record lists the files (relative, ``/``-separated) this archive's extractions placed;
    only those may be replaced. Returns the files placed.
    """
    record = target / f".{archive.name}.files.json"
    ours = _read_record(record)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    rels = [p.relative_to(tmp).as_posix() for p in files]
    with atomic_write(record) as rec:
        rec.write_text(dump_json(sorted(ours | set(rels))))
    placed, kept = [], []
    for src, rel in zip(files, rels, strict=True):
        dest = target.joinpath(*rel.split("/"))
        if dest.is_file() and rel not in ours:
            if not filecmp.cmp(src, dest, shallow=False):
                kept.append(rel)
            continue
        if dest.exists() and not dest.is_file():
            kept.append(rel)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        placed.append(dest)
    if kept:
        warnings.warn(
            f"{len(kept)} files in {str(target)!r} differ from {archive.name}'s copies and were "
            f"kept, as samtune did not write them (first: {', '.join(kept[:3])}); move them "
            "away and re-run to take the archive's",
            SamtuneWarning,
            stacklevel=3,
        )
    return placed


def _move_into(tmp: Path, target: Path, archive: Path) -> list[Path]:
    """Move what was extracted to ``tmp`` into ``target``, replacing only what it put there.

    Only entries an earlier extraction of this archive put there may be replaced; the record
    is written before the first move, so an interrupted extraction can be redone.
    """
    record = target / f".{archive.name}.entries.json"
    ours = _read_record(record)
    names = sorted(item.name for item in tmp.iterdir())
    clash = [n for n in names if (target / n).exists() and n not in ours]
    if clash:
        raise DataError(
            f"{str(target)!r} already holds {', '.join(clash[:3])}, which samtune did not "
            f"extract from {archive.name}; move it away or choose another dataset root"
        )
    with atomic_write(record) as rec:
        rec.write_text(dump_json(sorted(ours | set(names))))
    created = []
    for name in names:
        dest = target / name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(tmp / name, dest)
        created.append(dest)
    return created


# --------------------------------------------------------------------------- recipes


def _remote(file: RemoteFile, urls: Mapping[str, str] | None) -> str:
    if urls and file.filename in urls:
        return urls[file.filename]
    return file.resolved_url()


def parse_checksum(filename: str, value: str) -> dict[str, str]:
    """``"md5:<hex>"`` or ``"sha256:<hex>"`` -> ``{"md5": hex}`` (ConfigError otherwise)."""
    algo, _, digest = value.partition(":")
    want = {"md5": 32, "sha256": 64}.get(algo)
    if want is None or len(digest) != want or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise ConfigError(
            f"checksum for {filename!r} must be 'sha256:<64 hex digits>' or "
            f"'md5:<32 hex digits>'; found {value!r}"
        )
    return {algo: digest}


def _expected(file: RemoteFile, checksums: Mapping[str, str] | None) -> dict:
    """md5 / sha256 / size to verify ``file`` against.

    The recipe's values, then what the publisher states (:data:`PUBLISHED`); a checksum the
    caller gives replaces both, size included (it describes another copy of the file).
    """
    if checksums and file.filename in checksums:
        return {"md5": None, "sha256": None, "size": None,
                **parse_checksum(file.filename, checksums[file.filename])}  # fmt: skip
    published = PUBLISHED.get(file.filename, {})
    return {
        "md5": file.md5 or published.get("md5"),
        "sha256": file.sha256 or published.get("sha256"),
        "size": file.size if file.size is not None else published.get("size"),
    }


def _taco_member(name: str) -> str | None:
    """Where a member of TACO.zip goes: ``<any>/batch_N/<image>`` -> ``data/batch_N/<image>``.

    Zenodo's archive is a snapshot of the TACO repository (``TACO/data/batch_1/000000.jpg``,
    ...); the image folders are found wherever they sit, so a repackaged copy without the
    ``TACO/data/`` prefix loads too. Only the image folders are taken (the annotation file
    comes pinned by its SHA-256), and macOS metadata (``__MACOSX/``, ``._*``, ``.DS_Store``)
    is left out.
    """
    parts = name.replace("\\", "/").strip("/").split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    for i, part in enumerate(parts[:-1]):
        if part.startswith("batch_"):
            return "/".join(["data", *parts[i:]])
    return None


def _password_hint(name: str, recipe: Recipe) -> str:
    return PASSWORD_SOURCES.get(
        name, f"the dataset's publisher gives it on its download page ({recipe.source})"
    )


def _get_file(
    file: RemoteFile, root: Path, name: str, *, urls, checksums, quiet: bool, password, keep: bool
) -> None:
    """Fetch (or find), verify and, for an archive, extract one of a recipe's files."""
    dest = root / file.filename
    marker = dest.with_name(f".{dest.name}.extracted")
    if file.extract and marker.is_file():
        return
    fetched = not dest.is_file()
    expected = _expected(file, checksums)
    download_file(_remote(file, urls), dest, quiet=quiet, name=file.filename, **expected)
    if not file.extract:
        return
    recipe = get_recipe(name)
    try:
        safe_extract(
            dest,
            root,
            rename=_taco_member if file is TACO_ARCHIVE else None,
            merge=file is TACO_ARCHIVE,
            password=password,
            password_hint=_password_hint(name, recipe),
        )
    except CorruptArchiveError as exc:
        if not fetched:
            raise
        dest.unlink()  # samtune downloaded it in this run: a re-run must fetch it afresh
        redo = (
            f"samtune deleted its download: re-run `samtune data download {name} --root "
            f"{root}` to download it again"
        )
        raise CorruptArchiveError(dest, exc.detail, redo) from None
    with atomic_write(marker) as tmp:
        tmp.write_text(dump_json({"archive": file.filename, "sha256": file_digest(dest)}))
    if not keep:
        dest.unlink()


def download_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    urls: Mapping[str, str] | None = None,
    checksums: Mapping[str, str] | None = None,
    quiet: bool = False,
    keep_archives: bool = True,
    route: str = "archive",
    password: str | None = None,
    allow_missing: bool = False,
) -> Path:
    """Fetch, verify and extract a recipe's data into ``root`` (default ``$SAMTUNE_DATA/<folder>``).

    An archive already present in ``root`` (downloaded by hand, or by an earlier run) is
    verified and extracted without downloading it again; extraction is recorded in a
    ``.<archive>.extracted`` marker so re-runs are instant.

    Args:
        name: recipe name (``trashcan``, ``trashcan-material``, ``zerowaste``, ``taco``).
        root: the dataset folder.
        urls: file name -> URL overrides (mirrors, tests); the recipe's environment variable
            does the same from the shell.
        checksums: file name -> ``"sha256:<hex>"`` or ``"md5:<hex>"``, replacing what the
            recipe and the publisher state (size included) for that file.
        quiet: no progress bar.
        keep_archives: keep downloaded archives after extraction (needed to re-extract).
        route: TACO only: ``"archive"`` (``TACO.zip`` from Zenodo, checksum-verified) or
            ``"per-image"`` (each image from its ``flickr_url``/``coco_url``).
        password: for a ZipCrypto-encrypted archive.
        allow_missing: TACO only: finish with a warning, instead of a ``DataError``, when
            images listed in ``annotations.json`` are not on disk afterwards.

    Returns:
        ``root``.

    Raises:
        DataError: a failed checksum, an unsafe, encrypted or corrupt archive, or TACO images
            missing after the download (without ``allow_missing``).
    """
    recipe = get_recipe(name)
    if route not in TACO_ROUTES or (route != "archive" and name != "taco"):
        raise ConfigError(
            f"route {route!r} is not one of {', '.join(TACO_ROUTES)} (per-image exists for "
            "taco only)"
        )
    root = Path(root).expanduser() if root is not None else recipe.default_root()
    if name == "demo":
        return ensure_demo_dataset(root if root != recipe.default_root() else None)
    if not recipe.files:
        raise MissingFileError(
            f"dataset {name!r} is not downloadable ({recipe.source}); expected layout: "
            f"{_fill(recipe.layout, root, recipe.name)}"
        )
    for filename, value in (checksums or {}).items():
        parse_checksum(filename, value)
    files = list(recipe.files)
    if name == "taco" and route == "archive":
        files.append(TACO_ARCHIVE)  # merged file by file into data/, beside the annotations
        _forget_extraction_if_incomplete(root)
    root.mkdir(parents=True, exist_ok=True)
    for file in files:
        _get_file(file, root, name, urls=urls, checksums=checksums, quiet=quiet,
                  password=password, keep=keep_archives)  # fmt: skip
    if name == "taco" and route == "per-image":
        download_taco_images(root, quiet=quiet, allow_missing=allow_missing)
    elif name == "taco":
        images = root / "data"
        command = f"samtune data download taco --root {root}"
        require_images(images / "annotations.json", images, command=command,
                       allow_missing=allow_missing)  # fmt: skip
    return root


def _forget_extraction_if_incomplete(root: Path) -> None:
    """Drop TACO.zip's extraction marker when images it provides are missing again.

    The archive is merged file by file (nothing there is replaced), so extracting it once more
    restores deleted images; without this a re-run would skip it and only report them.
    """
    marker = root / f".{TACO_ARCHIVE.filename}.extracted"
    annotations = root / "data" / "annotations.json"
    if marker.is_file() and annotations.is_file():
        if missing_images(annotations, root / "data")[1]:
            marker.unlink()


# --------------------------------------------------------------------------- missing images


def missing_images(annotations: str | Path, images: str | Path) -> tuple[int, list[str]]:
    """(number of images ``annotations`` lists, the ``file_name`` of those not on disk).

    Each ``file_name`` is joined to ``images`` with :func:`samtune.io.join_inside`, so a name
    that would leave the folder is a ``DataError`` rather than a path looked up.
    """
    data = read_annotations(annotations)
    records = data.get("images", []) if isinstance(data, dict) else []
    missing = [
        str(rec.get("file_name"))
        for rec in records
        if not join_inside(
            images, rec.get("file_name") if isinstance(rec, dict) else None, what="image file_name"
        ).is_file()  # fmt: skip
    ]
    return len(records), missing


def require_images(
    annotations: str | Path,
    images: str | Path,
    *,
    command: str,
    allow_missing: bool = False,
    how_to_allow: str = "--allow-missing",
) -> int:
    """Refuse (or, with ``allow_missing``, warn about) images listed but not on disk.

    For loaders and downloads alike: a dataset whose annotation file lists images that are
    absent must not be trained on as a silent subset.

    Args:
        annotations: the COCO annotation file.
        images: the folder its ``file_name`` values are relative to.
        command: what fetches the missing images (``samtune data download taco --root R``).
        allow_missing: warn (a :class:`SamtuneWarning` stating the count) instead of raising.
        how_to_allow: the option that sets ``allow_missing``, for the message.

    Returns:
        The number of missing images.

    Raises:
        DataError: some images are missing (the message gives the count, the first names
            and ``command``), or a ``file_name`` leaves the image folder.
    """
    total, missing = missing_images(annotations, images)
    if not missing:
        return 0
    what = (
        f"{len(missing)} of {total} images listed in {str(annotations)!r} are not in "
        f"{str(images)!r} (first: {', '.join(missing[:3])})"
    )
    if not allow_missing:
        raise DataError(
            f"{what}; run `{command}` to fetch them, or allow the subset explicitly "
            f"({how_to_allow})"
        )
    warnings.warn(f"{what}; continuing with the {total - len(missing)} present", SamtuneWarning,
                  stacklevel=2)  # fmt: skip
    return len(missing)


# --------------------------------------------------------------------------- TACO per image


def _taco_targets(root: Path, images: list) -> list[tuple[dict, Path, str | None]]:
    """(record, destination, URL) of every image, every name and URL checked first.

    ``annotations.json`` is downloaded, so untrusted: a ``file_name`` that leaves
    ``root/data`` or a URL that is not http(s) (``file://`` would copy local files) stops the
    whole download before anything is fetched.
    """
    targets = []
    for rec in images:
        if not isinstance(rec, dict):
            raise DataError(f"an image record in TACO's annotations.json is not an object: {rec!r}")
        dest = join_inside(root / "data", rec.get("file_name"), what="TACO image file_name")
        url = rec.get("flickr_url") or rec.get("coco_url")
        if url is not None and not re.match(r"https?://", str(url)):
            raise DataError(
                f"TACO image {rec.get('file_name')!r} has the URL {url!r}; only http(s) URLs "
                "are fetched: fix or re-download data/annotations.json"
            )
        targets.append((rec, dest, url))
    return targets


def download_taco_images(
    root: str | Path, *, quiet: bool = False, allow_missing: bool = False
) -> dict[str, int]:
    """Fetch every TACO image listed in ``root/data/annotations.json`` (the per-image route).

    Each image comes from its ``flickr_url`` (or ``coco_url``, OpenLitterMap); many of these
    links are dead today, which is why the Zenodo archive is the default route. Images already
    on disk are skipped, so the command can be re-run after an interruption. The hosts publish
    no checksums; each image is checked to be a readable image instead.

    Returns:
        Counts: ``downloaded``, ``present``, ``failed``.

    Raises:
        OfflineError: no image could be fetched because the network is unreachable.
        DataError: an unsafe ``file_name`` or URL, or (without ``allow_missing``) some images
            failed: the message counts them and lists the first; re-run to retry.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    data = read_annotations(root / "data" / "annotations.json")
    targets = _taco_targets(root, data.get("images", []))
    counts = {"downloaded": 0, "present": 0, "failed": 0}
    failures: list[str] = []
    offline: OfflineError | None = None
    for rec, dest, url in tqdm(
        targets, desc="TACO images", disable=quiet or not sys.stderr.isatty()
    ):
        if dest.is_file():
            counts["present"] += 1
            continue
        try:
            if url is None:
                raise DataError("no flickr_url or coco_url")
            download_file(url, dest, quiet=True)
            load_image(dest)
            counts["downloaded"] += 1
        except OfflineError as exc:
            offline = exc
            counts["failed"] += 1
            failures.append(str(rec["file_name"]))
        except DataError as exc:
            dest.unlink(missing_ok=True)
            counts["failed"] += 1
            failures.append(f"{rec['file_name']} ({exc})")
    if counts["failed"]:
        if offline is not None and counts["downloaded"] == 0 and counts["present"] == 0:
            raise offline
        what = (
            f"{counts['failed']} of {len(targets)} TACO images could not be fetched "
            f"(first: {', '.join(failures[:3])})"
        )
        if not allow_missing:
            raise DataError(
                f"{what}; re-run `samtune data download taco --root {root} --route per-image` "
                "to retry them, use the default archive route, or pass --allow-missing to keep "
                "the subset"
            )
        warnings.warn(f"{what}; kept the subset (--allow-missing)", SamtuneWarning, stacklevel=2)
    return counts


def describe_recipe(recipe: Recipe) -> str:
    """Human-readable source, licence, layout and how-to-get for a recipe."""
    lines = [
        recipe.title,
        f"source:  {recipe.source}",
        f"licence: {recipe.licence}",
        f"layout:  {recipe.layout}",
    ]
    if recipe.citation:
        lines.append(f"cite:    {recipe.citation}")
    return "\n".join(lines)
