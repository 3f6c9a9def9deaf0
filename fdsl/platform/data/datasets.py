"""Training input as Ray Datasets: read a generated folder, or render on the fly (no disk).

Both give the same columns, so a trainer does not care which one it got:
    image     uint8 array (H, W) or (H, W, 3) per row (a Ray Data tensor column)
    label     int32 class id
    instance  int32 instance id within the class

    ds = read_dataset("runs/data/debug")                # shards written by `fdsl generate`
    ds = render_dataset(get_preset("debug-fractaldb"))  # the same images, rendered by Ray tasks
Rows come class-major; shuffle in the consumer (e.g. `iter_torch_batches(local_shuffle_buffer_size=)`
or `ds.randomize_block_order()`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import ray
import ray.exceptions

from fdsl.platform.data.manifest import check_shards, identity, identity_diff, load_manifest
from fdsl.platform.data.shards import (
    ShardPlan,
    decode_images,
    generator_key,
    plan_of,
    read_shard,
    render_batch,
)

COLUMNS = ("image", "label", "instance")


def validate_dataset_dir(directory: str | os.PathLike, experiment=None, *, full: bool = False) -> dict:
    """The manifest of a complete, intact data set folder, or a FileNotFoundError / ValueError.

    Checks that every shard exists with the manifest's size (and sha256 with `full=True`), and, given
    an experiment, that the folder holds that experiment's images (generator, version and config).
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    if experiment is not None:
        have, want = manifest["identity"], identity(experiment)
        have, want = ({k: v for k, v in d.items() if k != "layout"} for d in (have, want))
        if have != want:
            raise ValueError(f"{directory} holds other images than experiment {experiment.name!r} "
                             f"({identity_diff(have, want)}); generate it with `fdsl generate`")
    bad = check_shards(directory, manifest["shards"], full=full)
    if bad:
        listed = ", ".join(f"{f} ({p})" for f, p in list(bad.items())[:3])
        raise ValueError(f"{directory}: {len(bad)} bad shard(s): {listed}; run `fdsl generate` with the "
                         "same arguments to repair it")
    return manifest


def _decode_batch(batch: dict, *, encoding: str, image_shape: list[int]) -> dict[str, np.ndarray]:
    return {"image": decode_images(batch["image"], encoding, image_shape),
            "label": np.asarray(batch["label"], dtype=np.int32),
            "instance": np.asarray(batch["instance"], dtype=np.int32)}


READ_CPUS = 0.25
"""CPUs reserved by a read or decode task: light work that must still fit beside training workers
(a Tune trial with two 0.5-CPU Train workers leaves 0.9 of 2 CPUs, where 1-CPU reads would wait forever)."""


def _read_parquet(paths: list[str]):
    """`ray.data.read_parquet`, avoiding a thread race of Ray 2.60's V2 reader when aiohttp is absent.

    The V2 reader resolves paths in several threads (driver and a ListFiles task), each importing
    `fsspec.implementations.http`; without aiohttp one thread can see the half-imported module and
    fail with "cannot import name 'HTTPFileSystem'" (an ImportError Ray does not catch). Then the V1
    reader is used for this dataset (the DataContext is copied into the dataset at creation); with
    aiohttp installed nothing changes.
    """
    ctx = ray.data.DataContext.get_current()
    use_v2 = ctx.use_datasource_v2
    if use_v2 and importlib.util.find_spec("aiohttp") is None:
        ctx.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(paths, num_cpus=READ_CPUS)
    finally:
        ctx.use_datasource_v2 = use_v2


def read_dataset(directory: str | os.PathLike, *, verify: bool = False):
    """A `ray.data.Dataset` of a folder made by `fdsl generate`, decoded to uint8 arrays.

    The folder is validated against its manifest first (`verify=True` also checks every sha256).
    """
    manifest = validate_dataset_dir(directory, full=verify)
    root = Path(directory).absolute()
    paths = [str(root / shard["file"]) for shard in manifest["shards"]]
    ds = _read_parquet(paths).select_columns(list(COLUMNS))
    decode = {"encoding": manifest["encoding"], "image_shape": manifest["image_shape"]}
    return ds.map_batches(_decode_batch, batch_format="numpy", fn_kwargs=decode, num_cpus=READ_CPUS)


def render_dataset(experiment):
    """A `ray.data.Dataset` rendering the experiment's images on the fly (nothing on disk).

    One block per planned shard, rendered in batches of `synthesis.batch_size` by the same adapter
    that `fdsl generate` uses, so image i is the same array as row i of the generated folder.
    """
    experiment.validate()
    syn = experiment.synthesis
    plan = plan_of(experiment)
    ds = ray.data.range(plan.num_rows, override_num_blocks=plan.num_shards)
    return ds.map_batches(
        render_batch, batch_size=syn.batch_size, num_cpus=syn.num_cpus_per_task,
        resources={syn.task_resource: 0.001} if syn.task_resource else None,
        fn_kwargs={"generator": generator_key(experiment), "num_instances": plan.num_instances})


def read_images(directory: str | os.PathLike, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
    """The images of (label, instance) pairs from a generated folder, with pyarrow only (no Ray)."""
    manifest = validate_dataset_dir(directory)
    plan = ShardPlan(manifest["num_classes"], manifest["num_instances"], manifest["shard_rows"])
    wanted: dict[int, list[tuple[int, int]]] = {}
    for k, (label, instance) in enumerate(pairs):
        if not (0 <= label < plan.num_classes and 0 <= instance < plan.num_instances):
            raise ValueError(f"image ({label}, {instance}): outside {plan.num_classes} classes x "
                             f"{plan.num_instances} instances")
        shard, offset = plan.locate(label, instance)
        wanted.setdefault(shard, []).append((k, offset))
    out: list[np.ndarray] = [None] * len(pairs)  # type: ignore[list-item]
    for shard, items in wanted.items():
        rows = read_shard(Path(directory) / manifest["shards"][shard]["file"], [o for _, o in items])
        for (k, _), image in zip(items, rows["image"], strict=True):
            out[k] = image
    return out


NODE_LOSS_ATTEMPTS = 3


def take_all(ds, what: str, log=print) -> list[dict]:
    """`ds.take_all()`, again (up to NODE_LOSS_ATTEMPTS in all) when a Ray node was lost under it.

    On an autoscaling cluster a node the autoscaler is removing as idle can still be handed one of
    Ray Data's read tasks or metadata actors, which then die with it ("Terminated by autoscaler";
    seen in the local cluster drill), and Ray Data does not retry a lost actor. The read itself is
    deterministic, so it is simply run again."""
    for attempt in range(1, NODE_LOSS_ATTEMPTS + 1):
        try:
            return ds.take_all()
        except ray.exceptions.RayError as err:
            text = str(err)
            lost = any(m in text for m in ("node has died", "NodeDiedError", "ActorDiedError",
                                           "Terminated by autoscaler", "ObjectLostError"))
            if not lost or attempt == NODE_LOSS_ATTEMPTS:
                raise
            log(f"{what}: a Ray node was lost while reading ({type(err).__name__}); reading again "
                f"({attempt + 1}/{NODE_LOSS_ATTEMPTS})")
    raise AssertionError("the loop returns or raises")
