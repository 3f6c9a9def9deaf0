"""Simple baselines a reader can place a fine-tuned ViT against, fitted in the same run.

On the same labelled subset and evaluated on the same val split as the fine-tuning run: logistic
regression and 1-nearest-neighbour on the raw pixels (scikit-learn), scaled to [0, 1] and
standardised per pixel for the logistic regression. Nothing random: the same subset gives the same
numbers. At most `max_fit_rows` training images are used (a seeded subset past that; recorded).
"""

from __future__ import annotations

import time

import numpy as np


def _pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def pixel_baselines(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                    val_labels: np.ndarray, *, seed: int = 0, max_fit_rows: int = 10_000) -> dict:
    """{"logreg_top1", "knn1_top1", "fit_rows", "features", "seconds"} of raw-pixel baselines."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    import torch
    import torch.nn.functional as F

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
    from sklearn.neighbors import KNeighborsClassifier

    train = backbone_features(model, train_images, img_size, mean, std)
    val = backbone_features(model, val_images, img_size, mean, std)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", weights="distance")
    return round(float(knn.fit(train, np.asarray(train_labels)).score(val, np.asarray(val_labels))), 4)
