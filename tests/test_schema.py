"""Files fdsl reads back are checked by one schema check: a damaged or crafted file is one line."""

from __future__ import annotations

import json

import pytest
from conftest import run_fdsl

from fdsl.platform.data.manifest import FORMAT, load_manifest
from fdsl.schema import check_fields, load_json


def good_manifest() -> dict:
    return {"format": FORMAT, "identity": {}, "generator": {"name": "fractaldb"}, "num_shards": 1,
            "num_rows": 4, "num_classes": 2, "num_instances": 2, "shard_rows": 4, "encoding": "raw",
            "image_shape": [8, 8], "content_sha256": "0" * 64, "bytes_per_image": 64.0,
            "shards": [{"file": "shard-00000.parquet", "rows": 4, "sha256": "0" * 64}]}


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: [m], "got list, expected a JSON object"),
    (lambda m: {k: v for k, v in m.items() if k != "shards"}, "field 'shards' is missing"),
    (lambda m: {k: v for k, v in m.items() if k != "identity"}, "field 'identity' is missing"),
    (lambda m: {**m, "num_rows": "4"}, "field 'num_rows' is str, expected an integer"),
    (lambda m: {**m, "num_rows": True}, "field 'num_rows' is bool, expected an integer"),
    (lambda m: {**m, "shards": [7]}, r"shards\[0\]: got int, expected a JSON object"),
    (lambda m: {**m, "shards": [{"file": "../../x", "rows": 4, "sha256": ""}]},
     r"shards\[0\]\.file is '../../x', expected 'shard-00000.parquet'"),
    (lambda m: {**m, "format": "other/1"}, "format 'other/1', expected"),
])
def test_damaged_manifests_are_named(tmp_path, change, message):
    (tmp_path / "manifest.json").write_text(json.dumps(change(good_manifest())))
    with pytest.raises(ValueError, match=message):
        load_manifest(tmp_path)


def test_good_manifest_loads_and_bytes_are_not_json(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(good_manifest()))
    assert load_manifest(tmp_path)["num_rows"] == 4
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a text file|not valid JSON"):
        load_manifest(tmp_path)


def test_schema_accepts_ints_for_numbers_only():
    assert check_fields("x", {"a": 1, "b": 2.5}, {"a": float, "b": float})
    with pytest.raises(ValueError, match="field 'a' is str, expected a number"):
        check_fields("x", {"a": "1"}, {"a": float})
    with pytest.raises(FileNotFoundError):
        load_json("/nonexistent/file.json", {})


@pytest.mark.parametrize("command", ["verify", "preview"])
def test_cli_on_a_list_manifest_is_one_line(tmp_path, command):
    (tmp_path / "manifest.json").write_text("[]")
    out = ["--out", str(tmp_path.parent / "p.png")] if command == "preview" else []
    args = [command, str(tmp_path), *out]
    res = run_fdsl(*args)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "expected a JSON object" in res.stderr
