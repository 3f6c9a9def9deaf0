"""A rough estimate of a training run's memory, checked against this machine before a local Ray starts.

The estimate adds, per training process (each Ray Train worker, or the driver in local mode):
    parameters x 16 bytes          fp32 weights, gradients and AdamW's two moments
    micro batch x activations      what autograd keeps per image for each view the student sees:
                                   per block 18 T D + 2 H T^2 floats (T tokens, D width, H heads),
                                   x 1.5 for what the formula leaves out (masks, norms, copies)
    1.5 GiB                        torch, timm and the Ray worker process themselves
and 1 GiB for the driver and Ray, plus 16 bytes per row of the training stream (its row ids: 8 bytes
on the driver while they are built, 8 in the object store; `streams.id_rows`). It is meant to catch
a run that clearly cannot fit (a full-size section paired with a laptop: DINO on ViT-Tiny at 224 px
with 2 + 10 crops wants ~40 GiB), not to predict the peak: a run estimated above the machine's
memory is refused with one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil

GIB = 1024**3
PROCESS_BYTES = 1.5 * GIB
BASE_BYTES = 1.0 * GIB
ID_BYTES = 16
"""Per row of a training stream: its int64 id on the driver and in Ray's object store."""


def vit_shape(model) -> dict[str, int]:
    """Parameters, width, depth, heads and patch grid of a timm ViT (built on the meta device)."""
    blocks = list(getattr(model, "blocks", []))
    heads = getattr(getattr(blocks[0], "attn", None), "num_heads", 1) if blocks else 1
    return {"params": sum(p.numel() for p in model.parameters()), "dim": int(getattr(model, "embed_dim", 0)),
            "depth": len(blocks), "heads": int(heads),
            "patch": int(model.patch_embed.patch_size[0]) if hasattr(model, "patch_embed") else 16,
            "prefix": int(getattr(model, "num_prefix_tokens", 1))}


def estimate_bytes(shape: dict[str, int], micro_batch: int, views: Sequence[int], processes: int,
                   stream_rows: int = 0) -> float:
    """Bytes a run of `processes` training processes needs; `views`: the image sizes (px) each
    sample goes through the student in (one for supervised training, 2 + local crops for DINO);
    `stream_rows`: rows of its seeded training stream (0: none, e.g. a set read anew each pass)."""
    per_image = 0.0
    for size in views:
        tokens = (size // shape["patch"]) ** 2 + shape["prefix"]
        per_block = 18 * tokens * shape["dim"] + 2 * shape["heads"] * tokens**2
        per_image += 4 * 1.5 * shape["depth"] * per_block
    per_process = 16 * shape["params"] + micro_batch * per_image + PROCESS_BYTES
    return BASE_BYTES + max(processes, 1) * per_process + ID_BYTES * stream_rows


def check_fits(section: str, need: float, what: str, hint: str) -> None:
    """ValueError when `need` bytes exceed this machine's memory: names the estimate, `what` it is
    made of and `hint` (what to lower or which preset to pair)."""
    have = psutil.virtual_memory().total
    if need > have:
        raise ValueError(f"{section}: this run needs about {need / GIB:.0f} GiB of memory ({what}), this "
                         f"machine has {have / GIB:.0f} GiB; {hint}, or pass --address of a larger cluster")
