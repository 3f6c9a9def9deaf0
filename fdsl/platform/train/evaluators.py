"""What a run is measured with: the fine-tuning evaluator (top-1/top-5, loss, confusion over all
ranks), the k-NN probe of SSL features, and the simple baselines a reader can place a fine-tuned ViT
against, fitted in the same run.

Baselines: on the same labelled subset and evaluated on the same val split as the fine-tuning run: logistic
regression and 1-nearest-neighbour on the raw pixels (scikit-learn), scaled to [0, 1] and
standardised per pixel for the logistic regression. Nothing random: the same subset gives the same
numbers. At most `max_fit_rows` training images are used (a seeded subset past that; recorded).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fdsl.atomic import atomic_write_text
from fdsl.platform.train.dino import headless
from fdsl.platform.train.plans import SSLModel
from fdsl.platform.train.weights import load_pretrained

KNN_FILE = "knn.json"
"""An SSL run's k-NN probe (`knn_probe`): its final figures."""

def _pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def pixel_baselines(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                    val_labels: np.ndarray, *, seed: int = 0, max_fit_rows: int = 10_000) -> dict:
    """{"logreg_top1", "knn1_top1", "fit_rows", "features", "seconds"} of raw-pixel baselines."""
    start = time.perf_counter()
    keep = np.arange(len(train_labels))
    if len(keep) > max_fit_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), max_fit_rows, replace=False))
    x, y = _pixels(train_images[keep]), np.asarray(train_labels)[keep]
    xv, yv = _pixels(val_images), np.asarray(val_labels)
    result = {"fit_rows": int(len(keep)), "features": f"raw pixels ({x.shape[1]})"}
    if len(np.unique(y)) < 2:  # one class only: both baselines predict it
        constant = round(float(np.mean(yv == y[0])), 4)
        return {**result, "logreg_top1": constant, "knn1_top1": constant,
                "seconds": round(time.perf_counter() - start, 3)}
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    logreg.fit(x, y)
    knn = KNeighborsClassifier(n_neighbors=1).fit(x, y)
    result["logreg_top1"] = round(float(logreg.score(xv, yv)), 4)
    result["knn1_top1"] = round(float(knn.score(xv, yv)), 4)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def backbone_features(model, images: np.ndarray, img_size: int, mean, std,
                      batch_size: int = 256) -> np.ndarray:
    """L2-normalised pooled features of a headless timm backbone for uint8 (N,H,W[,3]) images
    (resized bicubic to `img_size`, normalised by `mean`/`std` in [0, 1] units)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    shift = torch.tensor([255.0 * v for v in mean]).view(1, 3, 1, 1)
    scale = torch.tensor([255.0 * v for v in std]).view(1, 3, 1, 1)
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = F.interpolate(x[start:start + batch_size].float(), size=(img_size, img_size),
                                  mode="bicubic", align_corners=False).clamp_(0, 255)
            out.append(F.normalize(model((batch - shift) / scale).float(), dim=1).numpy())
    return np.concatenate(out)


def feature_knn(model, train_images, train_labels, val_images, val_labels, *, img_size: int, mean, std,
                k: int = 20) -> float:
    """Top-1 on the val split of a cosine k-NN classifier on the backbone's features of the (labelled)
    training images: DINO's own measure of what self-supervised features hold."""
    train = backbone_features(model, train_images, img_size, mean, std)
    val = backbone_features(model, val_images, img_size, mean, std)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", weights="distance")
    return round(float(knn.fit(train, np.asarray(train_labels)).score(val, np.asarray(val_labels))), 4)


def val_tensors(shard, rank: int, world: int, device):
    """This rank's share (rows with index % world == rank) of the val split, kept in memory."""
    images, labels = [], []
    for batch in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        keep = batch["index"] % world == rank
        images.append(torch.from_numpy(batch["image"][keep]))
        labels.append(torch.from_numpy(batch["label"][keep].astype(np.int64)))
    return torch.cat(images).to(device), torch.cat(labels).to(device)


def evaluate(model, images, labels, num_classes: int, normalise, batch_size: int = 256) -> dict:
    """Top-1/top-5 counts, summed loss and the confusion matrix over all ranks (all_reduce)."""
    k = min(5, num_classes)
    stats = torch.zeros(4, dtype=torch.float64)  # correct1, correct5, loss_sum, count
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x, y = normalise(images[start:start + batch_size]), labels[start:start + batch_size]
            logits = model(x).float()
            top = logits.topk(k, dim=1).indices
            stats[0] += (top[:, 0] == y).sum().item()
            stats[1] += (top == y[:, None]).any(dim=1).sum().item()
            stats[2] += F.cross_entropy(logits, y, reduction="sum").item()
            stats[3] += len(y)
            confusion += torch.bincount((y * num_classes + top[:, 0]).cpu(),
                                        minlength=num_classes * num_classes).double()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats)
        torch.distributed.all_reduce(confusion)
    n = max(1.0, stats[3].item())
    return {"top1": stats[0].item() / n, "top5": stats[1].item() / n, "loss": stats[2].item() / n,
            "count": int(stats[3].item()),
            "confusion": confusion.view(num_classes, num_classes).long().numpy()}


def knn_probe(out: Path, data, seed: int, out_dim: int, spec: SSLModel) -> dict:
    """Cosine 20-NN top-1 on the val split of the teacher's features (labels of the training images),
    beside the same architecture at random initialisation (seeded): whether DINO learned anything.
    Also written to the run folder as knn.json."""
    images = (data.train_images, data.train_labels, data.val_images, data.val_labels)
    kwargs = dict(img_size=spec.img_size, mean=spec.mean, std=spec.std)
    teacher = feature_knn(load_pretrained(out, num_classes=0), *images, **kwargs)
    torch.manual_seed(seed)
    random_init = feature_knn(headless(spec.architecture, img_size=spec.img_size,
                                        patch_size=spec.patch_size), *images, **kwargs)
    result = {"knn_top1": teacher, "knn_top1_random_init": random_init, "knn_k": 20,
              "ln_out_dim": round(float(np.log(out_dim)), 4)}
    atomic_write_text(out / KNN_FILE, json.dumps(result, indent=2) + "\n")
    return result
