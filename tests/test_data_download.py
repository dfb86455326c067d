"""Downloads against a local HTTP server: progress, resume, checksums, unsafe archives, recipes."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
import zipfile

import numpy as np
import pytest
from local_http import RangeHandler
from PIL import Image
from typer.testing import CliRunner

from samtune.cli import app
from samtune.data import load_dataset
from samtune.data.download import download_dataset, download_file, safe_extract
from samtune.errors import DataError, OfflineError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_progress_resume_and_checksum(server, tmp_path, monkeypatch):
    served, base = server
    payload = os.urandom(300_000)
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    # an interrupted transfer keeps its partial file
    with pytest.raises(OfflineError, match="re-run the command to resume"):
        download_file(f"{base}/blob.bin?cut=100000", dest, sha256=_sha(payload), quiet=True)
    part = dest.with_name("blob.bin.part")
    partial = part.stat().st_size
    assert not dest.exists() and 0 < partial < len(payload)
    # resume: a Range request from where it stopped, progress bar on a "terminal"
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    download_file(f"{base}/blob.bin", dest, sha256=_sha(payload))
    assert dest.read_bytes() == payload and not part.exists()
    assert RangeHandler.ranges[-1] == f"bytes={partial}-"


def test_checksum_mismatch_is_retried_then_reported(server, tmp_path):
    served, base = server
    (served / "a.bin").write_bytes(b"x" * 1000)
    dest = tmp_path / "a.bin"
    with pytest.raises(DataError, match="corrupt: sha256 .*expected 0000"):
        download_file(f"{base}/a.bin", dest, sha256="0" * 64, quiet=True)
    assert not dest.exists() and not dest.with_name("a.bin.part").exists()
    assert len(RangeHandler.ranges) == 2  # one retry from scratch
    md5 = hashlib.md5(b"x" * 1000).hexdigest()
    assert download_file(f"{base}/a.bin", dest, md5=md5, quiet=True).read_bytes() == b"x" * 1000


def test_unreachable_host_gives_one_clear_message(tmp_path):
    with pytest.raises(OfflineError, match="cannot reach http://127.0.0.1:9/"):
        download_file("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", quiet=True)


def test_http_error_is_reported(server, tmp_path):
    _, base = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_file(f"{base}/missing.zip", tmp_path / "m.zip", quiet=True)


def test_archive_escaping_target_is_refused(tmp_path):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escape.txt", "bad")
    with pytest.raises(DataError, match=r"unsafe path '\.\./escape.txt'"):
        safe_extract(zpath, tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "target" / "ok.txt").exists()
    tpath = tmp_path / "evil.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        link = tarfile.TarInfo("data/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(DataError, match="link or special file"):
        safe_extract(tpath, tmp_path / "target2")
    abs_tar = tmp_path / "abs.tar.gz"
    with tarfile.open(abs_tar, "w:gz") as tf:
        info = tarfile.TarInfo("/tmp/abs.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
    with pytest.raises(DataError, match="unsafe path"):
        safe_extract(abs_tar, tmp_path / "target3")


def _coco_split(n_images: int, size=(24, 32)):
    images, anns, files = [], [], {}
    for i in range(1, n_images + 1):
        buf = io.BytesIO()
        Image.fromarray(np.full((*size, 3), (20 * i) % 256, np.uint8)).save(buf, format="PNG")
        files[f"{i}.png"] = buf.getvalue()
        images.append({"id": i, "file_name": f"{i}.png", "height": size[0], "width": size[1]})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 8],
                     "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]})  # fmt: skip
    cats = [{"id": 1, "name": "trash_bag"}, {"id": 2, "name": "rov"}]
    return {"images": images, "annotations": anns, "categories": cats}, files


def _zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path.read_bytes()


def test_trashcan_recipe_end_to_end(server, tmp_path, monkeypatch):
    served, base = server
    entries = {}
    for version in ("instance_version", "material_version"):
        for split, n in (("train", 3), ("val", 2)):
            coco, files = _coco_split(n)
            entries[f"dataset/{version}/instances_{split}_trashcan.json"] = json.dumps(
                coco
            ).encode()
            for name, data in files.items():
                entries[f"dataset/{version}/{split}/{name}"] = data
    data = _zip(served / "dataset.zip", entries)
    monkeypatch.setenv("SAMTUNE_TRASHCAN_URL", f"{base}/dataset.zip")
    root = tmp_path / "trashcan"
    download_dataset(
        "trashcan", root, quiet=True, checksums={"dataset.zip": "sha256:" + _sha(data)}
    )
    train = load_dataset("trashcan", "train", root)
    val = load_dataset("trashcan", "val", root)  # held out of the official train
    test = load_dataset("trashcan-material", "test", root)  # TrashCan's val serves as test
    assert len(train) + len(val) == 3 and len(test) == 2 and test.name == "trashcan-material/test"
    assert train[0].masks.shape == (1, 24, 32) and train[0].masks[0].sum() == 64
    # re-running is instant: the extraction marker skips the archive
    n_requests = len(RangeHandler.ranges)
    download_dataset("trashcan", root, quiet=True)
    assert len(RangeHandler.ranges) == n_requests


def test_zerowaste_recipe_via_cli(server, tmp_path, monkeypatch):
    served, base = server
    entries = {}
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        coco, files = _coco_split(n)
        entries[f"zerowaste-f-final/splits_final_deblurred/{split}/labels.json"] = json.dumps(
            coco
        ).encode()
        for name, data in files.items():
            entries[f"zerowaste-f-final/splits_final_deblurred/{split}/data/{name}"] = data
    data = _zip(served / "zerowaste-f-final.zip", entries)
    monkeypatch.setenv("SAMTUNE_ZEROWASTE_URL", f"{base}/zerowaste-f-final.zip")
    root = tmp_path / "zw"
    runner = CliRunner()
    # the fabricated archive is not the published one: its own checksum replaces Zenodo's
    md5 = "zerowaste-f-final.zip=md5:" + hashlib.md5(data).hexdigest()
    args = ["data", "download", "zerowaste", "--root", str(root), "--quiet", "--checksum", md5]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "zerowaste ready" in result.output
    result = runner.invoke(app, ["data", "info", "zerowaste", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {s: report[s]["images"] for s in report} == {"train": 2, "val": 1, "test": 1}
    assert report["train"]["per_class"] == {"trash_bag": 2, "rov": 0}


def test_taco_recipe_fetches_images_and_saves_split(server, tmp_path, monkeypatch):
    served, base = server
    coco, files = _coco_split(10)
    for img in coco["images"]:
        name = img["file_name"]
        (served / name).write_bytes(files[name])
        img["file_name"] = f"batch_1/{name}"
        img["flickr_url"] = f"{base}/{name}"
    (served / "annotations.json").write_text(json.dumps(coco))
    monkeypatch.setenv("SAMTUNE_TACO_URL", f"{base}/annotations.json")
    root = tmp_path / "taco"
    # a fabricated annotation file: its own checksum replaces the published one
    pin = {"data/annotations.json": "sha256:" + _sha((served / "annotations.json").read_bytes())}
    download = functools.partial(download_dataset, quiet=True, route="per-image", checksums=pin)
    download("taco", root)
    assert (root / "data" / "batch_1" / "3.png").is_file()
    splits = {s: load_dataset("taco", s, root) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [8, 1, 1]
    ids = [set(d.image_ids) for d in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    saved = json.loads((root / "splits-seed0.json").read_text())
    assert sorted(saved["train"]) == sorted(splits["train"].image_ids)
    # a missing image is fetched again on the next run
    (root / "data" / "batch_1" / "3.png").unlink()
    download("taco", root)
    assert (root / "data" / "batch_1" / "3.png").is_file()


def test_cli_reports_offline_and_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMTUNE_ZEROWASTE_URL", "http://127.0.0.1:9/zerowaste-f-final.zip")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "download", "zerowaste", "--root", str(tmp_path), "-q"])
    assert result.exit_code == 2
    assert "cannot reach" in result.output and result.output.count("\n") <= 2
    result = runner.invoke(app, ["data", "info", "trashcan", "--root", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "samtune data download trashcan" in result.output
