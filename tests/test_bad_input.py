"""Fuzz: a user's bad input to any command is one line on stderr, exit 2, no traceback, nothing written.

Generated `--set` values (NaN, infinities, huge and hugely negative numbers, empty strings, words,
unicode letters, hex) go to a random numeric field of each command's preset, in process through
`fdsl.cli.main`; a corpus of damaged weights files goes to `fdsl finetune --weights`. Every case
must end before any Ray worker starts, with the output folder untouched. The last test reports how
many cases each command got.
"""

from __future__ import annotations

import collections
import json
import os
import typing

import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdsl.cli import main
from fdsl.config import leaf_paths
from fdsl.presets import get_preset
from fdsl.sweeps import get_sweep

CASES: collections.Counter = collections.Counter()
BAD_NUMBERS = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e30", "-1e30", str(10**30),
                               str(-(10**30)), "", " ", "abc", "名前", "ü", "0x10", "1,5", "--1", "None?"])
COMMANDS = {
    "show": ("debug-vit", lambda out: []),
    "preview": ("debug-fractaldb", lambda out: ["--out", str(out / "p.png")]),
    "generate": ("debug-visualatom", lambda out: ["--out", str(out / "data")]),
    "pretrain": ("debug-vit", lambda out: ["--data", "stream", "--out", str(out / "run")]),
    "finetune": ("debug-finetune", lambda out: ["--weights", "scratch", "--out", str(out / "ft")]),
    "ssl": ("debug-dino", lambda out: ["--out", str(out / "ssl")]),
}


def numeric_fields(config) -> list[str]:
    fields = []
    for path, (owner, name) in leaf_paths(config).items():
        kind = typing.get_type_hints(type(owner))[name]
        if kind in (int, float) or kind == (float | None):
            fields.append(path)
    return sorted(fields)


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    had_ray = ray.is_initialized()
    code = main(argv)
    err = capsys.readouterr().err
    # refused before any Ray starts: a command that started one in this process would leave it
    # running (the CLI's process ends there), and the session's own Ray could not start after it
    assert had_ray or not ray.is_initialized(), f"{argv} started Ray before refusing: {err}"
    return code, err


def assert_one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.timeout(300)  # a value that passes validation would start a real run: fail, do not hang
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=BAD_NUMBERS)
def test_bad_set_values_are_one_line(command, data, value, tmp_path, capsys):
    preset, extra = COMMANDS[command]
    field = data.draw(st.sampled_from(numeric_fields(get_preset(preset))))
    before = sorted(tmp_path.rglob("*"))
    code, err = run_cli(capsys, [command, preset, *extra(tmp_path), "--set", f"{field}={value}"])
    assert_one_line(code, err)
    assert field.rsplit(".", 1)[-1] in err  # the message names the field
    assert sorted(tmp_path.rglob("*")) == before
    CASES[command] += 1


@pytest.mark.timeout(300)  # a value that passes validation would start a real run: fail, do not hang
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=BAD_NUMBERS)
def test_bad_sweep_values_are_one_line(data, value, tmp_path, capsys):
    field = data.draw(st.sampled_from(numeric_fields(get_sweep("debug-variety"))))
    argv = ["sweep", "debug-variety", "--out", str(tmp_path / "s"), "--set", f"{field}={value}"]
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err)
    assert not (tmp_path / "s").exists()
    CASES["sweep"] += 1


DEBUG_PRESETS = ["debug-vit", "debug-finetune", "debug-dino", "debug-fractaldb", "debug-ofdb",
                 "debug-onepfrac", "debug-rcdb", "debug-visualatom", "debug-exfractaldb"]


@pytest.mark.parametrize("name", DEBUG_PRESETS + ["sweep:debug-variety"])
def test_every_numeric_field_is_bounded(name):
    """Every numeric field of every section refuses NaN and numbers far out of any sensible range
    (the fuzz above found a sweep's seed without a range)."""
    is_sweep = name.startswith("sweep:")
    load = (lambda o: get_sweep(name[6:], o)) if is_sweep else (lambda o: get_preset(name, o))
    accepted = []
    for field in numeric_fields(load([])):
        for value in ("nan", str(10**30), str(-(10**30))):
            try:
                load([f"{field}={value}"])
                accepted.append(f"{field}={value}")
            except ValueError:
                pass
    assert accepted == []


def _weights_run(folder, weights: bytes | None, config: bytes | None):
    folder.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    if config is not None:
        (folder / "config.json").write_bytes(config)
    return folder


GOOD_CONFIG = {"architecture": "test_vit", "img_size": 32, "patch_size": 4, "num_classes": 8,
               "mean": [0.5] * 3, "std": [0.5] * 3}
CORPUS = {
    "no files": (None, None),
    "random weights": (b"\x93\x00\xffrandom bytes" * 10, json.dumps(GOOD_CONFIG).encode()),
    "truncated header": (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", json.dumps(GOOD_CONFIG).encode()),
    "huge header length": (b"\xff" * 8 + b"{}", json.dumps(GOOD_CONFIG).encode()),
    "config not json": (b"", b"{not json"),
    "config a list": (b"", b"[1, 2]"),
    "config missing img_size": (b"", json.dumps({k: v for k, v in GOOD_CONFIG.items()
                                                 if k != "img_size"}).encode()),
    "config wrong types": (b"", json.dumps({**GOOD_CONFIG, "img_size": "big"}).encode()),
    "config random bytes": (b"", bytes(range(256))),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_damaged_weights_are_one_line(case, tmp_path, capsys):
    weights = _weights_run(tmp_path / "w", *CORPUS[case])
    code, err = run_cli(capsys, ["finetune", "debug-finetune", "--weights", str(weights), "--out",
                             str(tmp_path / "ft")])
    assert_one_line(code, err)
    assert not (tmp_path / "ft").exists()
    CASES["finetune --weights (files)"] += 1


EXPERIMENTS = {
    "a list": b"[1]",
    "not json": b"{",
    "pretrain a list": json.dumps({"name": "debug-vit", "generator": "fractaldb", "pretrain": [1]}).encode(),
    "lr a string": json.dumps({"name": "debug-vit", "generator": "fractaldb",
                               "pretrain": {"lr": "fast"}}).encode(),
    "unknown generator": json.dumps({"name": "debug-vit", "generator": "nope"}).encode(),
    "data field wrong type": json.dumps({"name": "debug-vit", "generator": "fractaldb",
                                         "data": {"num_classes": [8]}}).encode(),
}


@pytest.mark.parametrize("case", sorted(EXPERIMENTS))
def test_damaged_experiment_json_on_resume_is_one_line(case, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "experiment.json").write_bytes(EXPERIMENTS[case])
    code, err = run_cli(capsys, ["pretrain", "debug-vit", "--data", "stream", "--out", str(run), "--resume"])
    assert_one_line(code, err)
    assert "experiment.json" in err and sorted(p.name for p in run.iterdir()) == ["experiment.json"]
    CASES["pretrain --resume (experiment.json)"] += 1


HEADER = {"fingerprint": "f" * 64, "identity": {}, "num_shards": 2, "experiment": {}}
JOURNALS = {
    "first line not json": b"{\n",
    "binary": bytes(range(256)),
    "header a list": b"[1, 2]\n",
    "header lacks num_shards": json.dumps({k: v for k, v in HEADER.items() if k != "num_shards"}).encode(),
    "num_shards a string": json.dumps({**HEADER, "num_shards": "2"}).encode(),
    "num_shards zero": json.dumps({**HEADER, "num_shards": 0}).encode(),
    "identity a string": json.dumps({**HEADER, "identity": "x"}).encode(),
}


@pytest.mark.parametrize("command", ["generate", "verify"])
@pytest.mark.parametrize("case", sorted(JOURNALS))
def test_damaged_synthesis_journal_is_one_line(command, case, tmp_path, capsys):
    """A partial data set folder whose _progress.jsonl header is damaged (its entry lines are only
    skipped: those shards are rendered again)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "_progress.jsonl").write_bytes(JOURNALS[case])
    argv = ["verify", str(folder)] if command == "verify" else \
        ["generate", "debug-fractaldb", "--out", str(folder)]
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err)
    assert "_progress.jsonl" in err and sorted(p.name for p in folder.iterdir() if p.name != ".lock") == \
        ["_progress.jsonl"]
    CASES[f"{command} (_progress.jsonl)"] += 1


def test_the_documented_journal_fix_loses_no_data_set(ray_local, tmp_path, capsys):
    """The fix troubleshooting.md gives for a damaged journal (delete it) leaves shards with no
    journal: `generate` renders them again (seeded: the same data set) instead of refusing the
    folder as foreign."""
    folder = tmp_path / "data"
    argv = ["generate", "debug-fractaldb", "--out", str(folder), "--set", "data.num_classes=2",
            "--set", "synthesis.shard_rows=8"]
    assert run_cli(capsys, argv)[0] == 0
    first = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").unlink()  # a partial folder whose journal was deleted: shards alone
    assert not (folder / "_progress.jsonl").exists() and list(folder.glob("shard-*.parquet"))
    code, err = run_cli(capsys, argv)
    assert code == 0, err
    again = json.loads((folder / "manifest.json").read_text())
    assert again["content_sha256"] == first["content_sha256"] and again["shards"] == first["shards"]


def test_journal_entries_that_are_damaged_are_skipped(tmp_path):
    from fdsl.platform.data.manifest import load_progress

    good = {"file": "shard-00001.parquet", "rows": 4, "sha256": "a", "shard": 1, "image_shape": [8, 8],
            "bytes": 10, "content_sha256": "b"}
    lines = [HEADER, good, {**good, "shard": 0}, {**good, "file": "../../etc/passwd", "shard": 0},
             {**good, "rows": "4", "shard": 0}, [1], {**good, "shard": 7, "file": "shard-00007.parquet"}]
    (tmp_path / "_progress.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"torn")
    header, entries = load_progress(tmp_path)
    assert header == HEADER and list(entries) == [1]


SEALS = {
    "missing": None,
    "not json": b"{",
    "a list": b"[1]",
    "files a list": json.dumps({"files": [], "hmac": "0" * 64}).encode(),
    "no hmac": json.dumps({"files": {"tuner.pkl": ["0" * 64]}}).encode(),
    "hmac of another key": json.dumps({"files": {"tuner.pkl": ["0" * 64]}, "hmac": "ab" * 32}).encode(),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("case", sorted(SEALS))
def test_damaged_sweep_seal_on_resume_is_one_line(case, tmp_path, capsys):
    """`sweep --resume` of a folder whose tune/ holds a pickle that would run a command: refused,
    whatever the seal beside it holds, before Ray starts or anything is written or unpickled."""
    import pickle

    sweep = get_sweep("debug-variety")
    out, marker = tmp_path / "s", tmp_path / "ran"
    (out / "tune").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"name": "debug-variety", **sweep.to_dict()}))

    class Crafted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (out / "tune" / "tuner.pkl").write_bytes(pickle.dumps(Crafted()))
    if SEALS[case] is not None:
        (out / "tune-seal.json").write_bytes(SEALS[case])
    before = sorted(p.name for p in out.iterdir())
    code, err = run_cli(capsys, ["sweep", "debug-variety", "--out", str(out), "--resume"])
    assert_one_line(code, err)
    assert "tune-seal.json" in err and not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == before
    CASES["sweep --resume (tune-seal.json)"] += 1


@pytest.mark.parametrize("case", ["not json", "a list", "binary"])
def test_damaged_sweep_json_on_resume_is_one_line(case, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_bytes({"not json": b"{", "a list": b"[1]", "binary": bytes(range(256))}[case])
    code, err = run_cli(capsys, ["sweep", "debug-variety", "--out", str(out), "--resume"])
    assert_one_line(code, err)
    assert "sweep.json" in err and sorted(p.name for p in out.iterdir()) == ["sweep.json"]
    CASES["sweep --resume (sweep.json)"] += 1


def test_zz_report_case_counts():
    """How many cases each command got (printed with -s; the closing note quotes them)."""
    print("\nbad-input cases per command:", dict(sorted(CASES.items())))
    assert all(CASES[c] >= 40 for c in COMMANDS) and CASES["sweep"] >= 40


def test_memory_estimate_separates_laptop_and_full_size_sections():
    from fdsl.platform.train.memory import GIB, estimate_bytes

    tiny = {"params": 5_700_000, "dim": 192, "depth": 12, "heads": 3, "patch": 16, "prefix": 1}
    laptop = {"params": 254_784, "dim": 64, "depth": 6, "heads": 2, "patch": 4, "prefix": 1}
    assert estimate_bytes(laptop, 128, [16], 1) < 4 * GIB
    assert estimate_bytes(tiny, 256, [224] * 2 + [96] * 8, 1) > 40 * GIB  # the DINO run
    assert estimate_bytes(tiny, 256, [224] * 2, 2) > estimate_bytes(tiny, 256, [224] * 2, 1)


def test_a_run_too_large_for_this_machine_is_one_line(tmp_path):
    """The issue's pairing: a debug data preset's full-size DINO section on a laptop. Refused before
    Ray starts (the estimate is ~53 GiB; skipped on a machine with that much memory)."""
    import psutil
    from conftest import run_fdsl

    if psutil.virtual_memory().total > 53 * 1024**3:
        pytest.skip("this machine could hold the run")
    out = tmp_path / "ssl"
    res = run_fdsl("ssl", "debug-fractaldb", "--dataset", "digits", "--out", str(out), timeout=120)
    assert_one_line(res.returncode, res.stderr)
    assert "needs about" in res.stderr and "laptop-* or debug-*" in res.stderr and not out.exists()
