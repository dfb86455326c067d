"""TACO's Zenodo archive, published checksums and sizes, encrypted and truncated archives,
images listed but missing, and untrusted file names (a local HTTP server, fabricated data)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
import zlib

import pytest
from local_http import RangeHandler
from test_data_download import _coco_split, _sha, _zip
from typer.testing import CliRunner

from samtune.cli import app
from samtune.data import load_dataset
from samtune.data.download import (
    PUBLISHED,
    TACO_ARCHIVE,
    download_dataset,
    download_file,
    require_images,
    safe_extract,
)
from samtune.errors import DataError, SamtuneWarning
from samtune.io import join_inside

# --------------------------------------------------------------------------- ZipCrypto writer


def _crc_byte(crc: int, byte: int) -> int:
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _zipcrypto(data: bytes, password: bytes, check: int) -> bytes:
    """PKWARE traditional encryption (APPNOTE 6.1) of ``data``, 12-byte header first."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in bytes(range(7, 18)) + bytes([check]):  # the header: 11 bytes, then the check
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    for byte in data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def encrypted_zip(path, entries: dict[str, bytes], password: bytes, method: int = 0) -> bytes:
    """A zip whose members are stored and ZipCrypto-encrypted (``method=99``: marked AES)."""
    local, central = bytearray(), bytearray()
    for name, data in entries.items():
        crc = zlib.crc32(data)
        body = _zipcrypto(data, password, crc >> 24)
        raw = name.encode()
        offset = len(local)
        header = (b"PK\x03\x04", 20, 1, method, 0, 0x21, crc, len(body), len(data), len(raw), 0)
        local += struct.pack("<4s5H3L2H", *header) + raw + body
        entry = (b"PK\x01\x02", 20, 20, 1, method, 0, 0x21, crc, len(body), len(data), len(raw),
                 0, 0, 0, 0, 0o100644 << 16, offset)  # fmt: skip
        central += struct.pack("<4s6H3L5H2L", *entry) + raw
    n = len(entries)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path.read_bytes()


def test_the_zipcrypto_writer_matches_pythons_reader(tmp_path):
    data = encrypted_zip(tmp_path / "e.zip", {"a/b.txt": b"hello" * 100}, b"s3cret")
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        assert zf.read("a/b.txt", pwd=b"s3cret") == b"hello" * 100
        with pytest.raises(RuntimeError, match="password required"):
            zf.read("a/b.txt")
    assert data[:4] == b"PK\x03\x04"


# --------------------------------------------------------------------------- encrypted archives


def test_encrypted_archive_needs_the_password_and_extracts_with_it(tmp_path):
    archive = tmp_path / "zw.zip"
    encrypted_zip(archive, {"zw/train/labels.json": b"{}", "zw/train/data/x.txt": b"x"}, b"pw#1")
    target = tmp_path / "root"
    hint = "published on the record page"
    with pytest.raises(DataError, match=f"is encrypted .*--password.*{hint}"):
        safe_extract(archive, target, password_hint=hint)
    with pytest.raises(DataError, match="wrong password"):
        safe_extract(archive, target, password="nope")
    assert sorted(p.name for p in target.iterdir()) == []  # nothing extracted, no temp left
    safe_extract(archive, target, password="pw#1")
    assert (target / "zw" / "train" / "data" / "x.txt").read_bytes() == b"x"


def test_aes_encrypted_archive_is_named_as_such(tmp_path):
    archive = tmp_path / "aes.zip"
    encrypted_zip(archive, {"a.txt": b"a"}, b"pw", method=99)
    with pytest.raises(DataError, match="AES-encrypted.*only ZipCrypto"):
        safe_extract(archive, tmp_path / "root", password="pw")


# --------------------------------------------------------------------------- sizes, checksums


def test_published_checksums_are_pinned():
    assert PUBLISHED["zerowaste-f-final.zip"] == {
        "md5": "e26e31a58080bca6782dca0e56074c5d",
        "size": 7_518_242_799,
    }
    assert PUBLISHED["TACO.zip"]["md5"] == "e9149407d883e21a8d224feef8210920"
    assert PUBLISHED["data/annotations.json"]["sha256"].startswith("ac1ec605c9e1fcda")
    assert TACO_ARCHIVE.url == "https://zenodo.org/records/3587843/files/TACO.zip?download=1"


def test_a_file_of_another_size_is_refused_before_it_is_written(server, tmp_path, monkeypatch):
    served, base = server
    _zip(served / "zerowaste-f-final.zip", {"a.txt": b"a"})
    monkeypatch.setenv("SAMTUNE_ZEROWASTE_URL", f"{base}/zerowaste-f-final.zip")
    root = tmp_path / "zw"
    with pytest.raises(DataError, match="publisher states 7518242799 bytes"):
        download_dataset("zerowaste", root, quiet=True)
    assert not (root / "zerowaste-f-final.zip.part").exists()
    # a pinned MD5 is checked too: another file of the right name fails it
    with pytest.raises(DataError, match="corrupt: md5"):
        download_dataset("zerowaste", root, quiet=True, checksums={
            "zerowaste-f-final.zip": "md5:" + "0" * 32})  # fmt: skip


def test_a_truncated_copy_is_resumed_to_the_published_size(server, tmp_path):
    served, base = server
    payload = os.urandom(200_000)
    (served / "f.bin").write_bytes(payload)
    dest = tmp_path / "f.bin"
    dest.write_bytes(payload[:50_000])  # an interrupted copy, e.g. from a browser
    md5 = hashlib.md5(payload).hexdigest()
    download_file(f"{base}/f.bin", dest, md5=md5, size=len(payload), quiet=True)
    assert dest.read_bytes() == payload and RangeHandler.ranges == ["bytes=50000-"]
    # a partial file longer than the published size cannot be a prefix: started afresh
    dest.unlink()
    dest.with_name("f.bin.part").write_bytes(os.urandom(300_000))
    download_file(f"{base}/f.bin", dest, md5=md5, size=len(payload), quiet=True)
    assert dest.read_bytes() == payload and RangeHandler.ranges[-1] is None


def test_a_truncated_download_is_deleted_and_fetched_again(server, tmp_path, monkeypatch):
    served, base = server
    full = _zip(served / "dataset.zip", {"dataset/instance_version/a.txt": b"a" * 5000})
    (served / "dataset.zip").write_bytes(full[: len(full) // 2])  # the server's copy is cut
    monkeypatch.setenv("SAMTUNE_TRASHCAN_URL", f"{base}/dataset.zip")
    root = tmp_path / "tc"
    result = CliRunner().invoke(app, ["data", "download", "trashcan", "--root", str(root), "-q"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert (
        "truncated or corrupt" in result.output and "samtune deleted its download" in result.output
    )
    assert not (root / "dataset.zip").exists()
    (served / "dataset.zip").write_bytes(full)  # fixed upstream: a re-run succeeds
    result = CliRunner().invoke(app, ["data", "download", "trashcan", "--root", str(root), "-q"])
    assert result.exit_code == 0, result.output
    assert (root / "dataset" / "instance_version" / "a.txt").read_bytes() == b"a" * 5000


# --------------------------------------------------------------------------- TACO


def _taco(served, base, n_images: int, drop: int = 0):
    """Serve annotations.json and a TACO.zip shaped like Zenodo's (the repository snapshot)."""
    coco, files = _coco_split(n_images)
    entries = {"TACO/README.md": b"readme", "TACO/download.py": b"print()"}
    for i, img in enumerate(coco["images"]):
        name = img["file_name"]
        img["file_name"] = f"batch_{1 + i % 2}/{name}"
        img["flickr_url"] = f"{base}/{name}"
        (served / name).write_bytes(files[name])
        if i >= drop:
            entries[f"TACO/data/{img['file_name']}"] = files[name]
            entries[f"__MACOSX/TACO/data/batch_1/._{name}"] = b"meta"
    entries["TACO/data/.DS_Store"] = b"junk"
    annotations = json.dumps(coco).encode()
    (served / "annotations.json").write_bytes(annotations)
    archive = _zip(served / "TACO.zip", entries)
    return [
        "--checksum", "TACO.zip=md5:" + hashlib.md5(archive).hexdigest(),
        "--checksum", "data/annotations.json=sha256:" + _sha(annotations),
    ]  # fmt: skip


def _taco_env(monkeypatch, base):
    monkeypatch.setenv("SAMTUNE_TACO_URL", f"{base}/annotations.json")
    monkeypatch.setenv("SAMTUNE_TACO_ARCHIVE_URL", f"{base}/TACO.zip")


def test_taco_from_the_zenodo_archive_loads(server, tmp_path, monkeypatch):
    served, base = server
    pins = _taco(served, base, 10)
    _taco_env(monkeypatch, base)
    root = tmp_path / "taco"
    args = ["data", "download", "taco", "--root", str(root), "-q", *pins]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "TACO.zip", "data"]  # fmt: skip
    assert sorted(p.name for p in (root / "data").iterdir()) == [
        "annotations.json", "batch_1", "batch_2"]  # fmt: skip
    assert not any(p.name.startswith(".") for p in (root / "data").rglob("*"))
    sizes = [len(load_dataset("taco", s, root)) for s in ("train", "val", "test")]
    assert sizes == [8, 1, 1]
    n = len(RangeHandler.ranges)
    assert CliRunner().invoke(app, args).exit_code == 0
    assert len(RangeHandler.ranges) == n  # re-running fetches nothing
    (root / "data" / "batch_2" / "4.png").unlink()  # lost: a re-run extracts it again
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (root / "data" / "batch_2" / "4.png").is_file() and len(RangeHandler.ranges) == n


def test_taco_images_missing_from_the_archive_are_counted(server, tmp_path, monkeypatch):
    served, base = server
    pins = _taco(served, base, 10, drop=3)
    _taco_env(monkeypatch, base)
    root = tmp_path / "taco"
    args = ["data", "download", "taco", "--root", str(root), "-q", *pins]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "3 of 10 images listed in" in result.output
    assert f"samtune data download taco --root {root}" in result.output
    result = CliRunner().invoke(app, [*args, "--allow-missing"])
    assert result.exit_code == 0, result.output
    assert "note: 3 of 10 images" in result.output and "with the 7 present" in result.output


def test_taco_per_image_route_refuses_unsafe_names_and_urls(server, tmp_path, monkeypatch):
    served, base = server
    _taco(served, base, 3)
    coco = json.loads((served / "annotations.json").read_text())
    coco["images"][1]["file_name"] = "../../escaped.png"
    (served / "annotations.json").write_text(json.dumps(coco))
    _taco_env(monkeypatch, base)
    root = tmp_path / "a" / "taco"
    pin = {"data/annotations.json": "sha256:" + _sha((served / "annotations.json").read_bytes())}
    with pytest.raises(DataError, match=r"'\.\./\.\./escaped\.png' has a '\.\.' part"):
        download_dataset("taco", root, quiet=True, route="per-image", checksums=pin)
    assert not (tmp_path / "escaped.png").exists() and not (root / "data" / "batch_1").exists()
    coco["images"][1]["file_name"] = "batch_1/x.png"
    coco["images"][1]["flickr_url"] = "file:///etc/passwd"
    (served / "annotations.json").write_text(json.dumps(coco))
    (root / "data" / "annotations.json").unlink()
    pin = {"data/annotations.json": "sha256:" + _sha((served / "annotations.json").read_bytes())}
    with pytest.raises(DataError, match="only http"):
        download_dataset("taco", root, quiet=True, route="per-image", checksums=pin)


def test_require_images_counts_and_warns(tmp_path):
    coco, files = _coco_split(4)
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "img").mkdir()
    for name in list(files)[:3]:
        (tmp_path / "img" / name).write_bytes(files[name])
    with pytest.raises(DataError, match=r"1 of 4 images .*\(first: 4.png\); run `get it`"):
        require_images(tmp_path / "ann.json", tmp_path / "img", command="get it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = require_images(tmp_path / "ann.json", tmp_path / "img", command="x", allow_missing=True)
    assert n == 1 and issubclass(caught[0].category, SamtuneWarning)
    assert "1 of 4 images" in str(caught[0].message)


# --------------------------------------------------------------------------- join_inside


@pytest.mark.parametrize(
    "name, why",
    [
        ("/etc/passwd", "absolute"),
        ("../x.png", "'..'"),
        ("a/../../x.png", "'..'"),
        ("a\\..\\..\\x.png", "'..'"),
        ("C:/x.png", "drive letter"),
        ("c:x.png", "drive letter"),
        ("\\\\host\\share\\x.png", "absolute"),
        ("a\x00.png", "NUL"),
        ("", "non-empty"),
        (None, "non-empty"),
        (7, "non-empty"),
        ("./.", "names no file"),
    ],
)
def test_join_inside_refuses_names_that_leave_the_folder(tmp_path, name, why):
    with pytest.raises(DataError, match=why):
        join_inside(tmp_path, name)


def test_join_inside_follows_symlinks_only_inside(tmp_path):
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "up").symlink_to(tmp_path)
    (root / "alias").symlink_to(root / "inner")
    with pytest.raises(DataError, match="symbolic link"):
        join_inside(root, "up/secret.txt")
    assert join_inside(root, "alias/a.png") == root / "alias" / "a.png"
    assert join_inside(root, "batch_1//./b.jpg") == root / "batch_1" / "b.jpg"
    assert join_inside(root, "batch_1\\c.jpg") == root / "batch_1" / "c.jpg"


def test_archive_members_go_through_join_inside(tmp_path):
    import io
    import tarfile

    tpath = tmp_path / "dot.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for name, data in ((".", None), ("./d/a.txt", b"a")):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    safe_extract(tpath, tmp_path / "t")  # tar's "./" entry is the archive's root, not an error
    assert (tmp_path / "t" / "d" / "a.txt").read_bytes() == b"a"
    zpath = tmp_path / "win.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("..\\evil.txt", "bad")
    with pytest.raises(DataError, match=r"unsafe path .*\(has a '\.\.' part\)"):
        safe_extract(zpath, tmp_path / "z")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "z" / "ok.txt").exists()


def test_taco_archive_fills_in_what_the_per_image_route_missed(server, tmp_path, monkeypatch):
    served, base = server
    pins = _taco(served, base, 6)
    _taco_env(monkeypatch, base)
    for name in ("2.png", "5.png"):  # dead links
        (served / name).unlink()
    root = tmp_path / "taco"
    pin = {"data/annotations.json": pins[-1].split("=", 1)[1]}
    with pytest.warns(SamtuneWarning, match="2 of 6 TACO images could not be fetched"):
        download_dataset("taco", root, quiet=True, route="per-image", checksums=pin,
                         allow_missing=True)  # fmt: skip
    mine = root / "data" / "batch_1" / "3.png"
    mine.write_bytes(b"my own edit")  # a file samtune did not write: never replaced
    result = CliRunner().invoke(app, ["data", "download", "taco", "--root", str(root), "-q", *pins])
    assert result.exit_code == 0, result.output
    assert "note: 1 files in" in result.output and "batch_1/3.png" in result.output
    assert mine.read_bytes() == b"my own edit"
    assert sorted(p.name for p in (root / "data").rglob("*.png")) == [
        f"{i}.png" for i in range(1, 7)
    ]


def test_a_file_that_is_not_the_published_one_is_reported_not_deleted(server, tmp_path):
    served, base = server
    (served / "f.bin").write_bytes(b"published")
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"somebody's own copy")
    md5 = hashlib.md5(b"published").hexdigest()
    with pytest.raises(DataError, match=r"is not the published file: md5 .*--checksum f\.bin="):
        download_file(f"{base}/f.bin", dest, md5=md5, quiet=True)
    assert dest.read_bytes() == b"somebody's own copy" and RangeHandler.ranges == []


@pytest.mark.parametrize(
    "member, placed",
    [
        ("TACO/data/batch_1/000001.jpg", "data/batch_1/000001.jpg"),
        ("TACO-master/data/batch_15/a.JPG", "data/batch_15/a.JPG"),
        ("batch_3/b.jpg", "data/batch_3/b.jpg"),
        ("TACO/data/annotations.json", None),
        ("TACO/detector/model.py", None),
        ("__MACOSX/TACO/data/batch_1/._000001.jpg", None),
        ("TACO/data/batch_1/.DS_Store", None),
        ("TACO/data/batch_1/", None),
    ],
)
def test_taco_archive_members_map_onto_the_recipe_layout(member, placed):
    from samtune.data.download import _taco_member

    assert _taco_member(member) == placed
