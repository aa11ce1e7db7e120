"""The run's metrics: one JSON object per line in ``metrics.jsonl``, and a plot of them."""
from __future__ import annotations

import json
import os
from typing import Optional

from sslfast._atomic import atomic_write_text

__all__ = ["MetricsLog", "read_metrics", "plot_metrics"]


class MetricsLog:
    """Appends ``{"step": ..., ...}`` lines (flushed each time). Resuming at step N first drops the lines a
    killed run wrote after N, so the file reads as one uninterrupted run."""

    def __init__(self, path: str, *, resume_step: Optional[int] = None):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if resume_step is None:
            open(path, "w").close()
        elif os.path.isfile(path):
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics file (a torn last line from a killed run is skipped)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_metrics(path: str, png: str, *, title: Optional[str] = None, train_label: str = "train loss") -> str:
    """A PNG of training loss (with the evaluation loss), evaluation metrics, throughput and learning rate
    against steps. Returns the PNG path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label=train_label)
    for key in sorted({k for r in evals for k in r if k.startswith("eval_") and k.endswith("loss")}):
        pts = [(r["step"], r[key]) for r in evals if key in r]
        ax.plot(*zip(*pts), "o-", ms=4, label=key.replace("_", " "))
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for key in sorted({k for r in evals for k in r if k.startswith("eval_") and not k.endswith(("loss", "perplexity"))}):
        pts = [(r["step"], r[key]) for r in evals if key in r]
        ax.plot(*zip(*pts), "o-", ms=4, label=key.replace("_", " "))
    ax.set(xlabel="step", title="evaluation")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    pts = [(r["step"], r["tokens_per_s"]) for r in train if r.get("tokens_per_s")]
    if pts:
        ax.plot(*zip(*pts), lw=1)
    ax.set(xlabel="step", ylabel="tokens / s", title="throughput")
    ax = axes[1, 1]
    pts = [(r["step"], r["lr"]) for r in train if "lr" in r]
    if pts:
        ax.plot(*zip(*pts), lw=1)
    ax.set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.suptitle(title or os.path.basename(os.path.dirname(os.path.abspath(path))))
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
