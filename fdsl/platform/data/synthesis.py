"""Distributed synthesis: an experiment -> a folder of shard-NNNNN.parquet files + manifest.json.

    from fdsl.presets import get_preset
    from fdsl.platform.data.synthesis import generate
    result = generate(get_preset("debug-fractaldb"), "runs/data/debug")   # starts a local Ray if needed
    print(result.summary())

A Ray Data pipeline maps over the shard indices still to do; each task renders one shard with the
render adapter (`fdsl.platform.data.shards.render_batch`), encodes it and writes it atomically, so a
shard's name and bytes never depend on scheduling. The driver journals finished shards in
_progress.jsonl and writes manifest.json last. Re-running resumes: only missing or corrupt shards
are rendered; a complete folder is verified and left as it is; another config's folder is refused.
Ray task retries (Ray Data's default for a dead worker) re-run a shard whose worker was killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import ray

from fdsl.atomic import OutputError, check_writable, owned_folder
from fdsl.platform import console
from fdsl.platform.connect import connect
from fdsl.platform.console import LOGS, quiet_data
from fdsl.platform.data.manifest import (
    MANIFEST,
    PROGRESS,
    ShardJournal,
    atomic_write_text,
    build_manifest,
    check_shards,
    fingerprint,
    identity,
    identity_diff,
    load_manifest,
    load_progress,
)
from fdsl.platform.data.shards import SHARD_GLOB, TMP_GLOB, generator_key, plan_of, shard_name, write_shard


@dataclasses.dataclass
class SynthesisResult:
    """What `generate` did: the manifest, which shards it rendered, and how fast."""

    directory: str
    manifest: dict
    rendered: list[int]
    """Shard indices rendered by this run (empty when the folder was already complete)."""
    seconds: float
    """Wall time of the whole call (Ray start-up, verification, rendering, manifest)."""
    render_seconds: float = 0.0
    """Wall time of the Ray Data pipeline alone (first task submitted to last shard written)."""
    task_seconds: float = 0.0
    """Sum of the render tasks' own wall times (rendering, encoding, writing, hashing)."""
    nodes: dict[str, int] = dataclasses.field(default_factory=dict)
    """Shards this run rendered per Ray node id."""

    @property
    def images(self) -> int:
        rows = {s["file"]: s["rows"] for s in self.manifest["shards"]}
        return sum(rows[shard_name(k)] for k in self.rendered)

    def summary(self) -> str:
        m = self.manifest
        if not self.rendered:
            return (f"generate: {self.directory} is complete and verified: {m['num_rows']} images in "
                    f"{m['num_shards']} shards, {m['bytes_per_image']:.0f} bytes/image "
                    f"({self.seconds:.1f} s)")
        rate = self.images / max(self.render_seconds, 1e-9)
        spread = f" on {len(self.nodes)} nodes" if len(self.nodes) > 1 else ""
        return (f"generate: {self.images} images ({len(self.rendered)} of {m['num_shards']} shards{spread}) "
                f"in {self.render_seconds:.1f} s ({self.seconds:.1f} s in all), {rate:.1f} images/s, "
                f"{m['bytes_per_image']:.0f} bytes/image -> {self.directory}")

def generate(experiment, out: str | os.PathLike, *, address: str | None = None,
             num_cpus: int | None = None, log=print) -> SynthesisResult:
    """Render `experiment` into the folder `out` (created, resumed or verified); see the module doc.

    `num_cpus`: CPUs of the local Ray this call starts, and the cap on concurrent render tasks.
    Raises ValueError for an unusable `out` (not writable, another config's data set, a foreign
    folder) and OutputError when a render task cannot write its shard (finished shards are kept for a resume).
    """
    start = time.perf_counter()
    experiment.validate()
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus: got {num_cpus}, expected a value >= 1")
    out = _prepare_folder(Path(out))
    ident = identity(experiment)
    plan = plan_of(experiment)
    with owned_folder(out, "fdsl generate"):
        known, complete = _known_shards(out, ident)
        bad = check_shards(out, list(known.values()), full=True)
        good = {k: e for k, e in known.items() if e["file"] not in bad and k < plan.num_shards}
        todo = [k for k in range(plan.num_shards) if k not in good]
        if complete and not todo:
            manifest = load_manifest(out)
            return _finish(SynthesisResult(str(out), manifest, [], time.perf_counter() - start), log)
        if todo:
            if experiment.synthesis.task_resource:
                _no_ray_data_resource_requests()
            connect(address, num_cpus)  # before writing anything: a bad --address leaves no trace
            quiet_data()  # progress below, one line at a time, instead of Ray Data's blocks
        for name, problem in sorted(bad.items()):
            log(f"generate: {name} is bad ({problem}); rendering it again")
        header = {"fingerprint": fingerprint(ident), "identity": ident, "num_shards": plan.num_shards,
                  "experiment": experiment.to_dict()}
        progress = ShardJournal(out, header, good)  # the journal first: then the manifest may go
        if complete:
            (out / MANIFEST).unlink()
        for tmp in out.glob(TMP_GLOB):  # left by killed workers of an earlier run
            tmp.unlink(missing_ok=True)
        render_start, task_seconds = time.perf_counter(), 0.0
        images_done, shown = 0, console.Progress("generate", len(todo), unit="shard")
        nodes: dict[str, int] = {}
        try:
            if todo:
                for done, entry in enumerate(_render_shards(experiment, out, todo, num_cpus), 1):
                    images_done += entry["rows"]
                    if done < len(todo):  # the last shard: the summary line instead
                        rate = images_done / max(time.perf_counter() - render_start, 1e-9)
                        shown.update(done, f"{images_done} images, {rate:.0f} images/s")
                    previous = known.get(entry["shard"])
                    if previous and previous["sha256"] != entry["sha256"]:
                        log(f"generate: warning: {entry['file']} re-rendered with other bytes")
                    good[entry["shard"]] = entry
                    task_seconds += entry.get("seconds", 0.0)
                    nodes[entry["node"]] = nodes.get(entry["node"], 0) + 1
                    progress.add(entry)
        finally:
            progress.close()
            shown.close()
        render_seconds = time.perf_counter() - render_start
        assert sorted(good) == list(range(plan.num_shards)), "a shard is missing after synthesis"
        manifest = build_manifest(experiment, ident, [good[k] for k in range(plan.num_shards)])
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        (out / PROGRESS).unlink()
        for tmp in out.glob(TMP_GLOB):
            tmp.unlink(missing_ok=True)
    if len(nodes) > 1:  # on a cluster: where the shards were rendered (the journal had it per shard)
        counts = ", ".join(f"{n[:6]}..{n[-6:]} {c}" for n, c in sorted(nodes.items()))
        log(f"generate: shards per node: {counts}")
    return _finish(SynthesisResult(str(out), manifest, todo, time.perf_counter() - start, render_seconds,
                                   task_seconds, nodes), log)


def _finish(result: SynthesisResult, log) -> SynthesisResult:
    log(result.summary())
    return result


def _prepare_folder(out: Path) -> Path:
    """Create `out` and prove it writable, or raise a ValueError that says what is wrong."""
    out = check_writable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}.tmp"
        probe.write_bytes(b"fdsl")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out: cannot write in {out} ({err.strerror or err}); choose a writable folder") \
            from None
    return out


def _known_shards(out: Path, ident: dict) -> tuple[dict[int, dict], bool]:
    """({shard: entry} already recorded in `out`, complete?), refusing another config's folder."""
    want = fingerprint(ident)
    if (out / MANIFEST).is_file():
        manifest = load_manifest(out)
        _refuse_other(out, manifest.get("identity", {}), manifest.get("fingerprint"), want, ident)
        shape = manifest["image_shape"]
        return {k: {**e, "shard": k, "image_shape": shape} for k, e in enumerate(manifest["shards"])}, True
    header, entries = load_progress(out)
    if header is not None:
        _refuse_other(out, header.get("identity", {}), header.get("fingerprint"), want, ident)
        return entries, False
    # shards with no journal (it was deleted as damaged): unverifiable, so all are rendered again
    # (the same bytes: rendering is seeded) instead of refusing the folder and losing them
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != LOGS
               and not p.match(SHARD_GLOB)]
    if foreign:
        raise ValueError(f"out: {out} is not empty and holds no fdsl data set ({foreign[0]}, ...); "
                         "choose an empty or new folder")
    return {}, False


def _refuse_other(out: Path, have: dict, have_fp: str | None, want_fp: str, want: dict) -> None:
    if have_fp != want_fp:
        raise ValueError(f"out: {out} holds a data set made with another config "
                         f"({identity_diff(have, want) or 'unknown format'}); use another --out "
                         "or delete the folder")


def _write_shards(batch: dict, *, out_dir: str, generator: tuple[str, str], synthesis: dict) -> dict:
    """Ray Data task body: render and write the shards of each row's `shards` list, one after another.

    An I/O error (disk full, permissions) comes back as a record, so the driver can name it; Ray Data
    would wrap a raised one in a generic "UDF failed" error. Other exceptions are bugs and raise.
    """
    node = ray.get_runtime_context().get_node_id()  # kept in the journal: which node wrote which shard
    entries = []
    for group in batch["shards"]:
        for k in group:
            try:
                entry = write_shard(out_dir, int(k), generator=generator, synthesis=synthesis)
                entries.append(json.dumps({**entry, "node": node}))
            except OSError as err:
                entries.append(json.dumps({"error": f"{shard_name(int(k))}: {type(err).__name__}: {err}"}))
                break
    return {"entry": np.array(entries, dtype=object)}


WAVES = 2
"""Render tasks per task slot, at least: enough to balance the slots, few enough to amortise Ray
Data's per-task cost (its scheduling loop notices a finished task within 0.1-0.2 s: measured
0.15 s idle per task on 2 CPUs, 20% of a 0.7 s shard; see docs/synthesis.md)."""
MAX_SHARDS_PER_TASK = 16
"""Upper bound on one task's shards, which bounds the work a retried task redoes."""


def task_groups(todo: list[int], slots: int) -> list[list[int]]:
    """Split the shard indices `todo` into contiguous groups, one render task each.

    `slots`: tasks that run at once. WAVES groups per slot (fewer when there are fewer shards), more
    when a group would exceed MAX_SHARDS_PER_TASK; sizes differ by at most one, so slots finish
    together.
    """
    count = min(len(todo), max(slots * WAVES, -(-len(todo) // MAX_SHARDS_PER_TASK)))
    size, extra = divmod(len(todo), count) if count else (0, 0)
    groups, at = [], 0
    for g in range(count):
        n = size + (g < extra)
        groups.append(todo[at:at + n])
        at += n
    return groups


RAY_DATA_UTIL_THRESHOLDS = tuple(f"RAY_DATA_DEFAULT_CLUSTER_SCALING_UP_{kind}_UTIL_THRESHOLD"
                                 for kind in ("CPU", "GPU", "MEMORY", "OBJECT_STORE_MEMORY"))


def _no_ray_data_resource_requests() -> None:
    """Keep Ray Data from asking the autoscaler for plain CPU bundles during synthesis on a pool.

    Ray Data's cluster autoscaler (rate-based, in this driver) requests `{CPU: n}` bundles when the
    cluster is busy; they carry no custom resource, so with the `synth` pool at its maximum they
    started nodes of the *training* pool, which no render task can use (seen in the local cluster
    drill: 2 train-cpu nodes during synthesis; on AWS they would be GPU nodes, idle until their
    idle timeout). The render tasks' own demand, which does carry `task_resource`, already scales
    the right pool: utilisation thresholds above 100% turn Ray Data's requests off. Ray Data reads
    them when it is imported, so this runs before Ray starts (a user's own setting is kept)."""
    if "ray.data" in sys.modules:
        return  # imported already (a library caller): its settings stand
    for name in RAY_DATA_UTIL_THRESHOLDS:
        os.environ.setdefault(name, "1.01")


def _render_shards(experiment, out: Path, todo: list[int], num_cpus: int | None):
    """Yield the manifest entry of each shard in `todo` as its Ray task finishes."""
    syn = experiment.synthesis
    cap = None if num_cpus is None else max(1, int(num_cpus / syn.num_cpus_per_task))
    slots = cap or max(1, int(ray.cluster_resources().get("CPU", 1) / syn.num_cpus_per_task))
    if syn.task_resource and cap is None:
        # a cluster pool, which may be scaled to zero now: one shard per task, so that the
        # autoscaler sees the whole demand (and a lost node costs one shard each)
        slots = len(todo)
    groups = task_groups(todo, slots)
    ds = ray.data.from_items([{"shards": g} for g in groups], override_num_blocks=len(groups))
    ds = ds.map_batches(
        _write_shards, batch_size=1, num_cpus=syn.num_cpus_per_task,
        compute=ray.data.TaskPoolStrategy(size=cap),
        resources={syn.task_resource: 0.001} if syn.task_resource else None,
        fn_kwargs={"out_dir": str(out), "generator": generator_key(experiment),
                   "synthesis": experiment.synthesis.to_dict()})
    # One operator only: Ray Data's per-operator reservation (meant to keep multi-operator pipelines
    # from starving each other) would hold back half the CPUs until the first task's output size is
    # known (measured on 2 CPUs: 1 task, then 2), and its downstream-capacity backpressure held the
    # second task back for the first 0.8 s. This dataset's own context, not the global one.
    ds.context.op_resource_reservation_enabled = False
    ds.context.downstream_capacity_backpressure_ratio = None
    for row in ds.iter_rows():
        entry = json.loads(row["entry"])
        if "error" in entry:
            raise OutputError(f"synthesis into {out} failed writing {entry['error']}; the finished "
                              "shards are kept: fix the cause and run the same command to resume")
        yield entry


__all__ = ["SynthesisResult", "generate"]
