"""Resumable, checksum-verified downloads and safe archive extraction for dataset recipes.

- :func:`download_file`: HTTP(S) with ``Range`` resume from ``<file>.part``, a tqdm progress
  bar (quiet when stderr is not a terminal or ``quiet=True``), MD5/SHA-256 verification with
  one automatic retry from scratch on a mismatch.
- :func:`safe_extract`: zip and tar(.gz) archives; refuses members that would land outside
  the target folder (absolute paths, ``..``), symlinks, hard links and device files.
- :func:`download_dataset`: a recipe's files (or, for TACO, its annotation file then every
  image listed in it), then extraction.

URLs can be redirected to a mirror (or a local test server) by the recipe's environment
variable (``SAMTUNE_TRASHCAN_URL``, ``SAMTUNE_ZEROWASTE_URL``, ``SAMTUNE_TACO_URL``) or by the
``urls`` argument.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, DataError, InputError, MissingFileError, OfflineError
from ..io import atomic_write, dump_json, read_json
from .coco import load_image, read_annotations
from .recipes import Recipe, RemoteFile, _fill, get_recipe
from .synthetic import ensure_demo_dataset

CHUNK = 1 << 16
USER_AGENT = "samtune-data/0.1 (+https://github.com/samtune)"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256`` or ``md5``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """Why ``path`` fails its checksums, or None when it passes (or none is known)."""
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
    quiet: bool = False,
    retries: int = 1,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download.

    Bytes go to ``dest + ".part"``; an interrupted download is resumed from there with an
    HTTP ``Range`` request (restarted when the server ignores it). The finished file is
    verified against ``md5``/``sha256`` when given, then renamed into place, so ``dest``
    exists only when complete. A checksum mismatch discards the file and retries from
    scratch ``retries`` times before raising.

    Raises:
        OfflineError: the host cannot be reached (the partial file is kept for a later resume).
        DataError: the server answered with an HTTP error, or the checksum does not match.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (md5 or sha256):
        if _check(dest, md5, sha256) is None:
            return dest
        dest.unlink()
    elif dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        _fetch(url, part, quiet=quiet, timeout=timeout, desc=dest.name)
        bad = _check(part, md5, sha256)
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


def _fetch(url: str, part: Path, *, quiet: bool, timeout: float, desc: str) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part file is complete
            return
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
    with response:
        status = getattr(response, "status", 200)
        mode = "ab" if (offset and status == 206) else "wb"
        if mode == "wb":
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, mode) as fh, _progress(total, offset, desc, quiet) as bar:
            try:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as exc:
                raise OfflineError(
                    f"download of {url} was interrupted after {fh.tell()} bytes ({exc}); "
                    "re-run the command to resume"
                ) from None
        if total is not None and part.stat().st_size < total:
            raise OfflineError(
                f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                "re-run the command to resume"
            )


# --------------------------------------------------------------------------- extraction


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(
            f"archive {str(archive)!r} contains the unsafe path {name!r} (absolute or with "
            "'..'), which would be written outside the target folder; refusing to extract it"
        )
    return path


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``target``, refusing anything unsafe.

    Every member is checked before anything is written: paths must stay inside ``target``;
    symlinks, hard links and device/FIFO entries are refused. Extraction goes to a temporary
    folder inside ``target`` and is moved into place at the end.

    Returns:
        The top-level paths created in ``target``.

    Raises:
        DataError: an unsafe member, or a file that is not a readable archive.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _safe_member(info.filename, archive)
                    mode = (info.external_attr >> 16) & 0o170000
                    if mode and mode not in (0o100000, 0o040000):
                        raise DataError(
                            f"archive {str(archive)!r} member {info.filename!r} is a link or "
                            "special file; refusing to extract it"
                        )
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _safe_member(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise DataError(
                            f"archive {str(archive)!r} member {m.name!r} is a link or special "
                            "file; refusing to extract it"
                        )
                tf.extractall(tmp, members=members, filter="data")
        else:
            raise DataError(
                f"{str(archive)!r} is not a zip or tar archive (corrupt or incomplete "
                "download?); delete it and download again"
            )
        # Only entries an earlier extraction of this archive put there may be replaced; the
        # record is written before the first move, so an interrupted extraction can be redone.
        record = target / f".{archive.name}.entries.json"
        ours: set[str] = set()
        if record.is_file():
            try:
                ours = set(read_json(record, what="extraction record"))
            except (InputError, TypeError):
                ours = set()
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
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"archive {str(archive)!r} is corrupt ({exc}); download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- recipes


def _remote(file: RemoteFile, urls: Mapping[str, str] | None) -> str:
    if urls and file.filename in urls:
        return urls[file.filename]
    return file.resolved_url()


def download_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    urls: Mapping[str, str] | None = None,
    checksums: Mapping[str, str] | None = None,
    quiet: bool = False,
    keep_archives: bool = True,
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
        checksums: file name -> ``"sha256:<hex>"`` or ``"md5:<hex>"``, added to (or replacing)
            what the recipe knows.
        quiet: no progress bar.
        keep_archives: keep downloaded archives after extraction (needed to re-extract).

    Returns:
        ``root``.
    """
    recipe = get_recipe(name)
    root = Path(root).expanduser() if root is not None else recipe.default_root()
    if name == "demo":
        return ensure_demo_dataset(root if root != recipe.default_root() else None)
    if not recipe.files:
        raise MissingFileError(
            f"dataset {name!r} is not downloadable ({recipe.source}); expected layout: "
            f"{_fill(recipe.layout, root, recipe.name)}"
        )
    root.mkdir(parents=True, exist_ok=True)
    for file in recipe.files:
        md5, sha256 = file.md5, file.sha256
        if checksums and file.filename in checksums:
            algo, _, digest = checksums[file.filename].partition(":")
            if algo == "md5":
                md5 = digest
            elif algo == "sha256":
                sha256 = digest
            else:
                raise ConfigError(
                    f"checksum for {file.filename!r} must be 'sha256:<hex>' or 'md5:<hex>', "
                    f"found {algo!r}"
                )
        dest = root / file.filename
        marker = dest.with_name(f".{dest.name}.extracted")
        if file.extract and marker.is_file():
            continue
        download_file(_remote(file, urls), dest, md5=md5, sha256=sha256, quiet=quiet)
        if file.extract:
            safe_extract(dest, root)
            with atomic_write(marker) as tmp:
                tmp.write_text(dump_json({"archive": file.filename, "sha256": file_digest(dest)}))
            if not keep_archives:
                dest.unlink()
    if name == "taco":
        download_taco_images(root, quiet=quiet)
    return root


def download_taco_images(root: str | Path, *, quiet: bool = False) -> dict[str, int]:
    """Fetch every TACO image listed in ``root/data/annotations.json`` (``flickr_url``).

    Images already on disk are skipped, so the command can be re-run after an interruption.
    Flickr publishes no checksums; each image is checked to be a readable image instead.

    Returns:
        Counts: ``downloaded``, ``present``, ``failed``.

    Raises:
        OfflineError: no image could be fetched because the network is unreachable.
        DataError: some images failed (the message lists the first ones); re-run to retry.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    data = read_annotations(root / "data" / "annotations.json")
    counts = {"downloaded": 0, "present": 0, "failed": 0}
    failures: list[str] = []
    offline: OfflineError | None = None
    images = data["images"]
    bar = tqdm(images, desc="TACO images", disable=quiet or not sys.stderr.isatty())
    for img in bar:
        dest = root / "data" / img["file_name"]
        if dest.is_file():
            counts["present"] += 1
            continue
        url = img.get("flickr_url") or img.get("coco_url")
        try:
            download_file(url, dest, quiet=True)
            load_image(dest)
            counts["downloaded"] += 1
        except OfflineError as exc:
            offline = exc
            counts["failed"] += 1
            failures.append(img["file_name"])
        except DataError as exc:
            dest.unlink(missing_ok=True)
            counts["failed"] += 1
            failures.append(f"{img['file_name']} ({exc})")
    if counts["failed"]:
        if offline is not None and counts["downloaded"] == 0 and counts["present"] == 0:
            raise offline
        raise DataError(
            f"{counts['failed']} of {len(images)} TACO images could not be fetched "
            f"(first: {', '.join(failures[:3])}); re-run `samtune data download taco` to retry "
            "them, or use load_dataset('taco', ..., on_error='skip') to train without them"
        )
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
