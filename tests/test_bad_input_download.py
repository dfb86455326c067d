"""Bad input to `samtune data download`: encrypted, AES, truncated archives and wrong options.

Each case puts an archive in the dataset folder by hand (no network), with ``--checksum``
naming its own MD5 so the published one does not apply; nothing may be written or removed.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from test_bad_input import Case, run_case
from test_download_archives import encrypted_zip

ZW = "zerowaste-f-final.zip"


def _archive(kind: str):
    def setup(root: Path, _mp) -> None:
        (root / "zw").mkdir()
        path = root / "zw" / ZW
        entries = {"zw/train/labels.json": b"{}", "zw/train/data/a.txt": b"a" * 4000}
        if kind == "plain" or kind == "truncated":
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in entries.items():
                    zf.writestr(name, data)
            if kind == "truncated":
                path.write_bytes(path.read_bytes()[:-100])
        else:
            encrypted_zip(path, entries, b"right", method=99 if kind == "aes" else 0)
        (root / "md5").write_text(hashlib.md5(path.read_bytes()).hexdigest())

    return setup


def _args(*extra: str) -> list[str]:
    return ["data", "download", "zerowaste", "--root", "zw", "-q", *extra]


CASES = [
    Case(
        "encrypted-no-password",
        _args(),
        [
            "encrypted",
            "--password",
            "github.com/dbash/zerowaste/issues/3",
            "zenodo.org/records/6412647",
        ],
        setup=_archive("zipcrypto"),
    ),
    Case(
        "encrypted-wrong-password",
        _args("--password", "wrong"),
        ["wrong password", "--password"],
        setup=_archive("zipcrypto"),
    ),
    Case(
        "aes-encrypted",
        _args("--password", "right"),
        ["AES-encrypted", "ZipCrypto", "7-Zip"],
        setup=_archive("aes"),
    ),
    Case(
        "truncated",
        _args(),
        ["truncated or corrupt", "re-run", "downloads it again"],
        setup=_archive("truncated"),
    ),
    Case(
        "checksum-no-equals",
        ["data", "download", "zerowaste", "--checksum", "md5:abc"],
        ["--checksum", "FILE=md5:<hex>"],
    ),
    Case(
        "checksum-bad-digest",
        ["data", "download", "zerowaste", "--checksum", f"{ZW}=md5:xyz"],
        ["md5:<32 hex digits>", "'md5:xyz'"],
    ),
    Case(
        "route-unknown",
        ["data", "download", "taco", "--route", "flickr"],
        ["'flickr'", "archive, per-image"],
    ),
    Case(
        "route-per-image-not-taco",
        ["data", "download", "zerowaste", "--route", "per-image"],
        ["per-image", "taco only"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_download_input(case: Case, tmp_path, monkeypatch):
    if case.setup is not None:
        setup = case.setup

        def with_pin(root: Path, mp) -> None:
            setup(root, mp)
            case.args[case.args.index("-q") + 1 : case.args.index("-q") + 1] = [
                "--checksum", f"{ZW}=md5:" + (root / "md5").read_text()]  # fmt: skip

        case = Case(case.id, list(case.args), case.words, case.code, with_pin)
    monkeypatch.setenv("SAMTUNE_ZEROWASTE_URL", "http://127.0.0.1:9/never-fetched.zip")
    run_case(case, tmp_path, monkeypatch)
