"""Figures a person would rather look at than read: image grids, latent maps, codebook usage, anomaly scores."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

__all__ = ["image_grid", "latent_map", "codebook_usage", "anomaly_scores"]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _images(x) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if a.ndim == 2:  # flat vectors: square them when possible
        side = int(round(np.sqrt(a.shape[1])))
        a = a.reshape(len(a), 1, side, side) if side * side == a.shape[1] else a[:, None, None, :]
    return a


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def image_grid(rows: Sequence, path: str, *, titles: Optional[Sequence[str]] = None, columns: int = 12) -> str:
    """One row of images per entry of ``rows`` (e.g. inputs, corrupted, reconstructions), ``columns`` each."""
    plt = _pyplot()
    rows = [_images(r)[:columns] for r in rows]
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.9, len(rows) * 1.0), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(columns):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                img = row[j]
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        if titles:
            axes[i, 0].set_title(titles[i], fontsize=8, loc="left")
    return _save(fig, path)


def latent_map(latents, labels, path: str, *, title: str = "latent codes") -> str:
    """A 2-D scatter of latent codes (their first two principal components), coloured by label."""
    plt = _pyplot()
    z = latents.detach().cpu().numpy() if hasattr(latents, "detach") else np.asarray(latents)
    z = z.reshape(len(z), -1)
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        z = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 5))
    points = ax.scatter(z[:, 0], z[:, 1], c=np.asarray(labels), cmap="tab10", s=6)
    fig.colorbar(points, ax=ax, label="label")
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    return _save(fig, path)


def codebook_usage(indices, num_codes: int, path: str, *, title: str = "codebook usage") -> str:
    """A histogram of how often each code is used, codes sorted by use."""
    plt = _pyplot()
    idx = indices.detach().cpu().numpy() if hasattr(indices, "detach") else np.asarray(indices)
    counts = np.sort(np.bincount(idx.reshape(-1), minlength=num_codes))[::-1]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(np.arange(num_codes), counts, width=1.0)
    used = int((counts > 0).sum())
    p = counts / max(counts.sum(), 1)
    perplexity = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    ax.set(title=f"{title}: {used}/{num_codes} codes used, perplexity {perplexity:.1f}", xlabel="code (by use)",
           ylabel="count")
    return _save(fig, path)


def anomaly_scores(normal_scores, anomaly_scores, path: str, *, threshold: Optional[float] = None,
                   title: str = "reconstruction error") -> str:
    """Score histograms of normal and anomalous samples, and the ROC curve with its AUROC."""
    from sklearn.metrics import roc_auc_score, roc_curve
    plt = _pyplot()
    normal, anomalous = np.asarray(normal_scores), np.asarray(anomaly_scores)
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    s = np.r_[normal, anomalous]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(s.min(), s.max(), 40)
    a.hist(normal, bins=bins, alpha=0.6, label="normal")
    a.hist(anomalous, bins=bins, alpha=0.6, label="anomalous")
    if threshold is not None:
        a.axvline(threshold, color="k", ls="--", label="threshold")
    a.set(title=title, xlabel="score", ylabel="samples")
    a.legend(fontsize=8)
    fpr, tpr, _ = roc_curve(y, s)
    b.plot(fpr, tpr)
    b.plot([0, 1], [0, 1], color="gray", ls=":")
    b.set(title=f"ROC (AUROC {roc_auc_score(y, s):.3f})", xlabel="false-positive rate", ylabel="true-positive rate")
    return _save(fig, path)
