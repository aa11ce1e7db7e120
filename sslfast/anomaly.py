"""Anomaly detection by reconstruction error: a model trained on normal data only rebuilds normal inputs well
and anomalies badly, so its reconstruction error is an anomaly score.

``ReconstructionDetector(model)`` wraps any of sslfast's auto-encoders, or builds one from a name ("ae", "dae",
"vae", "vqvae"), or a PCA reconstruction baseline ("pca"): ``fit`` (trains the model through sslfast's training
loop unless it is already trained), ``score`` (per-sample error, higher = more anomalous), ``calibrate`` (a
threshold for a target false-positive rate on normal validation data), ``predict`` and ``evaluate`` (AUROC,
AUPRC, precision, recall, F1 with scikit-learn's metrics).
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

__all__ = ["ReconstructionDetector", "PCAReconstruction", "MIN_CALIBRATION_SAMPLES"]

MIN_CALIBRATION_SAMPLES = 10
_MODELS = {"ae": "AutoEncoder", "dae": "DenoisingAutoEncoder", "vae": "VariationalAutoEncoder", "vqvae": "VQVAE"}


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif hasattr(x, "images"):  # an sslfast.data.ImageDataset
        x = torch.from_numpy(x.images)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, array or ImageDataset, got {type(x).__name__}")
    x = x.float()
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(1).nonzero()[0])
        raise ValueError(f"{name} contains NaN or Inf (first at sample {bad}): no score would be meaningful")
    return x


class PCAReconstruction(torch.nn.Module):
    """The obvious baseline: project on the top ``n_components`` principal directions of the normal data and
    back; the reconstruction error is the distance to that subspace."""

    def __init__(self, input_shape, n_components: int = 16):
        super().__init__()
        self.input_shape, self.n_components = tuple(input_shape), n_components
        dim = int(np.prod(self.input_shape))
        if not 1 <= n_components <= dim:
            raise ValueError(f"n_components must be in [1, {dim}], got {n_components}")
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(n_components, dim))
        self.fitted = False

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "PCAReconstruction":
        flat = x.reshape(x.shape[0], -1).double()
        self.mean.copy_(flat.mean(0).float())
        _, _, vt = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
        k = min(self.n_components, vt.shape[0])
        self.components.zero_()
        self.components[:k] = vt[:k].float()
        self.fitted = True
        return self

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1) - self.mean
        return ((flat @ self.components.t()) @ self.components + self.mean).view_as(x)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        err = (self.reconstruct(x) - x).square().flatten(1)
        return err.mean(1) if reduction == "mean" else err.max(1).values


class ReconstructionDetector:
    """Reconstruction-error anomaly detector around an auto-encoder (or PCA).

    ``model``: one of sslfast's auto-encoders, or "ae" / "dae" / "vae" / "vqvae" / "pca"; the other keywords
    (``input_shape``, ``latent_dim``, ...) configure a model built from a name. ``reduction`` scores a sample by
    the mean squared error over its elements or by the worst element ("max", for small localized defects).
    """

    def __init__(self, model: Union[str, torch.nn.Module] = "ae", *, reduction: str = "mean", **model_kwargs):
        if reduction not in ("mean", "max"):
            raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
        self.reduction = reduction
        self.threshold: Optional[float] = None
        self.kind = model if isinstance(model, str) else "model"
        if isinstance(model, str):
            if model == "pca":
                shape = model_kwargs.pop("input_shape", (1, 8, 8))
                model = PCAReconstruction(shape, model_kwargs.pop("latent_dim", model_kwargs.pop("n_components", 16)))
            elif model in _MODELS:
                import sslfast.models as models
                model = getattr(models, _MODELS[model])(**model_kwargs)
            else:
                raise ValueError(f"model must be one of {sorted(_MODELS) + ['pca']} or an auto-encoder, got {model!r}")
        elif model_kwargs:
            raise TypeError(f"keyword arguments {sorted(model_kwargs)} only configure a model built from a name")
        self.model = model
        self.trained = False

    def fit(self, normal, *, steps: int = 600, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
            progress: bool = False, retrain: bool = False) -> "ReconstructionDetector":
        """Train on normal data only (a PCA is fitted instead); a model trained before is kept unless
        ``retrain``. Returns self."""
        x = _as_tensor(normal, "normal data")
        if isinstance(self.model, PCAReconstruction):
            self.model.fit(x)
            self.trained = True
            return self
        if self.trained and not retrain:
            return self
        from sslfast.data import ImageDataset
        from sslfast.train import PretrainConfig, Trainer
        config = PretrainConfig(model={"AutoEncoder": "ae", "DenoisingAutoEncoder": "dae",
                                       "VariationalAutoEncoder": "vae", "VQVAE": "vqvae"}[type(self.model).__name__],
                                out=None, max_steps=steps, global_batch_size=min(batch_size, len(x)), lr=lr,
                                warmup=0.05, schedule="cosine", eval_every=0, save_every=0, eval_fraction=0.0,
                                progress=progress, seed=seed, weight_decay=0.0, device=str(x.device.type),
                                prefetch=0)
        Trainer(config, model=self.model, data=ImageDataset(x.numpy())).train()
        self.model.eval()
        self.trained = True
        return self

    @torch.no_grad()
    def score(self, x, reduction: Optional[str] = None) -> np.ndarray:
        """(N,) anomaly scores: the reconstruction error, higher = more anomalous."""
        if not self.trained:
            raise RuntimeError("score: call fit(normal_data) first")
        x = _as_tensor(x, "x")
        return self.model.reconstruction_error(x, reduction or self.reduction).double().cpu().numpy()

    def calibrate(self, normal_validation, target_fpr: float = 0.05) -> float:
        """Set the threshold so that a ``target_fpr`` fraction of normal validation samples is flagged."""
        if not 0.0 < target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
        scores = self.score(normal_validation)
        if len(scores) < MIN_CALIBRATION_SAMPLES:
            raise ValueError(f"calibrate: {len(scores)} normal validation samples are too few to set a threshold "
                             f"(at least {MIN_CALIBRATION_SAMPLES})")
        self.threshold = float(np.quantile(scores, 1.0 - target_fpr))
        return self.threshold

    def predict(self, x) -> np.ndarray:
        """(N,) bool: True where the score exceeds the calibrated threshold."""
        if self.threshold is None:
            raise RuntimeError("predict: call calibrate(normal_validation, target_fpr=...) first")
        return self.score(x) > self.threshold

    def evaluate(self, x, y) -> dict:
        """Against labels ``y`` (1 / True = anomaly): AUROC and AUPRC of the scores, and — once calibrated —
        precision, recall and F1 at the threshold."""
        from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score
        y = np.asarray(y).astype(int).reshape(-1)
        scores = self.score(x)
        if len(y) != len(scores):
            raise ValueError(f"evaluate: {len(scores)} samples but {len(y)} labels")
        if len(set(y.tolist())) < 2:
            raise ValueError("evaluate: the labels need both normal (0) and anomalous (1) samples")
        result = {"auroc": float(roc_auc_score(y, scores)), "auprc": float(average_precision_score(y, scores)),
                  "anomaly_rate": float(y.mean())}
        if self.threshold is not None:
            flagged = scores > self.threshold
            result.update(threshold=self.threshold, precision=float(precision_score(y, flagged, zero_division=0)),
                          recall=float(recall_score(y, flagged, zero_division=0)),
                          f1=float(f1_score(y, flagged, zero_division=0)))
        return result
