"""Anomaly detection by reconstruction error: a model trained on normal data only rebuilds normal inputs well
and anomalies badly, so its reconstruction error is an anomaly score.

``ReconstructionDetector(model)`` wraps any of sslfast's auto-encoders, or builds one from a name ("ae", "dae",
"vae", "vqvae"), or a PCA reconstruction baseline ("pca"): ``fit`` (trains the model through sslfast's training
loop unless it is already trained), ``score`` (per-sample score, higher = more anomalous), ``calibrate`` (a
threshold for a target false-positive rate on normal validation data), ``predict`` and ``evaluate`` (AUROC,
AUPRC, precision, recall, F1 with scikit-learn's metrics).

Raw reconstruction error favours simple inputs: a thin digit "1" is rebuilt well by any model, anomalous or not.
``score=`` picks what the detector ranks by (see ``SCORES``):

- ``"error"``: the reconstruction error (mean or max squared error per sample);
- ``"relative_error"``: the squared error over the input's own squared norm (error per unit of signal);
- ``"elbo"``: the VAE's negative evidence lower bound at the posterior mean (reconstruction + β·KL), VAE only;
- ``"latent_knn"``: mean distance from the sample's code to its ``knn`` nearest codes of the normal training
  data (a density estimate in latent space; PCA's code is its projection, VQ-VAE's the encoder's map). A
  training sample finds itself at distance 0: calibrate on normal data held out from ``fit``;
- ``"code_nll"``: the VQ-VAE's code statistics, the negative log-likelihood of a sample's codes under the
  per-position code frequencies of the normal data (add-one smoothed), VQ-VAE only.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from sslfast.data import ImageDataset
from sslfast.models.autoencoders.blocks import reconstruction_loss
from sslfast.models.autoencoders.vae import kl_to_standard_normal
from sslfast.models.families import FAMILIES
from sslfast.train import PretrainConfig, Trainer

__all__ = ["ReconstructionDetector", "PCAReconstruction", "MIN_CALIBRATION_SAMPLES", "SCORES", "scores_for",
           "knn_distance"]

MIN_CALIBRATION_SAMPLES = 10
SCORES = ("error", "relative_error", "elbo", "latent_knn", "code_nll")
_MODEL_ONLY_SCORES = {"elbo": "vae", "code_nll": "vqvae"}
_LATENT_BANK_SIZE = 5000  # normal training codes kept for latent_knn (a random subset beyond this)
_SCORE_BATCH = 512
_MODELS = {name: f.objectives["reconstruction"] for name, f in FAMILIES.items() if f.task == "autoencoder"}


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


def knn_distance(x: torch.Tensor, bank: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(N,) float64 mean Euclidean distance from each row of ``x`` (N, D) to its ``k`` nearest rows of ``bank``."""
    k = min(k, len(bank))
    return torch.cdist(x.double(), bank.double()).topk(k, dim=1, largest=False).values.mean(1)


def _kind_of(model) -> str:
    if isinstance(model, PCAReconstruction):
        return "pca"
    names = {"AutoEncoder": "ae", "DenoisingAutoEncoder": "dae", "VariationalAutoEncoder": "vae", "VQVAE": "vqvae"}
    for cls in type(model).__mro__:  # subclasses score like their family
        if cls.__name__ in names:
            return names[cls.__name__]
    return "model"


def scores_for(model: Union[str, torch.nn.Module]) -> tuple[str, ...]:
    """The scores (of ``SCORES``) a detector around ``model`` (a name or a model) can compute."""
    kind = model if isinstance(model, str) else _kind_of(model)
    return tuple(s for s in SCORES if _MODEL_ONLY_SCORES.get(s, kind) == kind
                 and (s != "latent_knn" or kind != "model"))


class ReconstructionDetector:
    """Anomaly detector around an auto-encoder (or PCA), trained on normal data only.

    ``model``: one of sslfast's auto-encoders, or "ae" / "dae" / "vae" / "vqvae" / "pca"; the other keywords
    (``input_shape``, ``latent_dim``, ...) configure a model built from a name. ``score``: the default of
    :meth:`score` (one of ``SCORES``; see the module docstring). ``reduction`` scores a sample's error by the mean
    squared error over its elements or by the worst element ("max", for small localized defects). ``knn``: the
    neighbours averaged by ``latent_knn``.
    """

    def __init__(self, model: Union[str, torch.nn.Module] = "ae", *, reduction: str = "mean", score: str = "error",
                 knn: int = 5, **model_kwargs):
        if reduction not in ("mean", "max"):
            raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
        if knn < 1:
            raise ValueError(f"knn must be >= 1, got {knn}")
        self.reduction, self.knn = reduction, int(knn)
        self.threshold: Optional[float] = None
        self._latent_bank: Optional[torch.Tensor] = None  # (M, code) normal training codes, for latent_knn
        self._code_log_prob: Optional[torch.Tensor] = None  # (*code_shape, num_codes), for code_nll
        self.kind = model if isinstance(model, str) else _kind_of(model)
        if isinstance(model, str):
            if model == "pca":
                shape = model_kwargs.pop("input_shape", (1, 8, 8))
                model = PCAReconstruction(shape, model_kwargs.pop("latent_dim", model_kwargs.pop("n_components", 16)))
            elif model in _MODELS:
                model = _MODELS[model](**model_kwargs)
            else:
                raise ValueError(f"model must be one of {sorted(_MODELS) + ['pca']} or an auto-encoder, got {model!r}")
        elif model_kwargs:
            raise TypeError(f"keyword arguments {sorted(model_kwargs)} only configure a model built from a name")
        self.model = model
        self.trained = False
        self.default_score = self._check_score(score)

    def _check_score(self, score: str) -> str:
        if score not in SCORES:
            raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
        if score not in scores_for(self.model):
            needs = _MODEL_ONLY_SCORES.get(score)
            raise ValueError(f"score {score!r} " + (f"needs a {needs} model" if needs else "needs a model with an "
                             "encoder") + f"; this detector's model ({self.kind}) offers {list(scores_for(self.model))}")
        return score

    def fit(self, normal, *, steps: int = 600, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
            progress: bool = False, retrain: bool = False) -> "ReconstructionDetector":
        """Train on normal data only (a PCA is fitted instead); a model trained before is kept unless
        ``retrain``. Returns self."""
        x = _as_tensor(normal, "normal data")
        if isinstance(self.model, PCAReconstruction):
            self.model.fit(x)
            self.trained = True
            self._fit_statistics(x, seed)
            return self
        if self.trained and not retrain:
            if self._latent_bank is None:
                self._fit_statistics(x, seed)
            return self
        if self.kind == "model":
            raise TypeError(f"fit: {type(self.model).__name__} is not one of sslfast's auto-encoders; train it "
                            "yourself and pass it trained (detector.trained = True)")
        config = PretrainConfig(model=self.kind,
                                out=None, max_steps=steps, global_batch_size=min(batch_size, len(x)), lr=lr,
                                warmup=0.05, schedule="cosine", eval_every=0, save_every=0, eval_fraction=0.0,
                                progress=progress, seed=seed, weight_decay=0.0, device=str(x.device.type),
                                prefetch=0)
        Trainer(config, model=self.model, data=ImageDataset(x.numpy())).train()
        self.model.eval()
        self.trained = True
        self._fit_statistics(x, seed)
        return self

    @torch.no_grad()
    def _fit_statistics(self, normal: torch.Tensor, seed: int) -> None:
        """What the latent scores compare against: the normal data's codes (and VQ-VAE code frequencies)."""
        if self.kind == "model":
            return
        keep = normal
        if len(normal) > _LATENT_BANK_SIZE:
            pick = torch.randperm(len(normal), generator=torch.Generator().manual_seed(seed))[:_LATENT_BANK_SIZE]
            keep = normal[pick]
        self._latent_bank = self._batched(self._latents, keep)
        if self.kind == "vqvae":
            codes = self.model.config.num_codes
            indices = self._batched(self.model.encode_indices, normal).long()  # (N, *code_shape)
            flat = indices.reshape(len(indices), -1)  # (N, P)
            slot = torch.arange(flat.shape[1]) * codes + flat  # (N, P): position p, code k -> p * K + k
            counts = torch.bincount(slot.reshape(-1), minlength=flat.shape[1] * codes).double() + 1.0
            counts = counts.view(*indices.shape[1:], codes)  # (*code_shape, K), add-one smoothed
            self._code_log_prob = (counts / counts.sum(-1, keepdim=True)).log()

    def _batched(self, fn, x: torch.Tensor) -> torch.Tensor:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        device = tensors[0].device if tensors else x.device
        return torch.cat([fn(x[i:i + _SCORE_BATCH].to(device)).cpu() for i in range(0, len(x), _SCORE_BATCH)])

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """(N, code) the sample's code: PCA coefficients, the (mean) encoding, or the VQ-VAE's encoder map."""
        if self.kind == "pca":
            return (x.reshape(len(x), -1) - self.model.mean) @ self.model.components.t()
        if self.kind == "vae":
            return self.model.encode(x)[0]
        if self.kind == "vqvae":
            return self.model.encoder(self.model.check_input(x)).flatten(1)
        return self.model.encode(x).flatten(1)

    def _negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.model.encode(x)
        recon = reconstruction_loss(self.model.decoder(mu), x, self.model.config.loss, "sample")
        return recon + self.model.config.beta * kl_to_standard_normal(mu, logvar)

    def _latent_knn(self, x: torch.Tensor) -> torch.Tensor:
        codes = self._latents(x)
        return knn_distance(codes, self._latent_bank.to(codes.device), self.knn)

    def _code_nll(self, x: torch.Tensor) -> torch.Tensor:
        indices = self.model.encode_indices(x).long()  # (N, *code_shape)
        log_prob = self._code_log_prob.to(indices.device)
        positions = log_prob.reshape(-1, log_prob.shape[-1])  # (P, K)
        flat = indices.reshape(len(indices), -1)  # (N, P)
        return -positions.gather(1, flat.t()).t().sum(1)

    @torch.no_grad()
    def score(self, x, reduction: Optional[str] = None, score: Optional[str] = None) -> np.ndarray:
        """(N,) anomaly scores, higher = more anomalous: ``score`` (default: the detector's) of ``SCORES``."""
        if not self.trained:
            raise RuntimeError("score: call fit(normal_data) first")
        kind = self._check_score(score or self.default_score)
        x = _as_tensor(x, "x")
        if kind == "error":
            return self.model.reconstruction_error(x, reduction or self.reduction).double().cpu().numpy()
        if self.kind != "pca":
            x = self.model.check_input(x)
        if kind == "relative_error":
            error = self._batched(lambda b: (self.model.reconstruct(b) - b).square().flatten(1).sum(1), x)
            signal = x.reshape(len(x), -1).double().square().sum(1)
            return (error.double() / signal.clamp(min=1e-12)).numpy()
        if self._latent_bank is None:
            raise RuntimeError(f"score {kind!r}: this detector's normal-data statistics are missing; call "
                               "fit(normal_data) first")
        fn = {"elbo": self._negative_elbo, "latent_knn": self._latent_knn, "code_nll": self._code_nll}[kind]
        return self._batched(fn, x).double().numpy()

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

    def evaluate(self, x, y, score: Optional[str] = None) -> dict:
        """Against labels ``y`` (1 / True = anomaly): AUROC and AUPRC of the scores (``score``: default the
        detector's), and — once calibrated, for the detector's own score — precision, recall and F1 at the
        threshold."""
        from sklearn.metrics import (
            average_precision_score,
            f1_score,
            precision_score,
            recall_score,
            roc_auc_score,
        )
        y = np.asarray(y).astype(int).reshape(-1)
        scores = self.score(x, score=score)
        if len(y) != len(scores):
            raise ValueError(f"evaluate: {len(scores)} samples but {len(y)} labels")
        if len(set(y.tolist())) < 2:
            raise ValueError("evaluate: the labels need both normal (0) and anomalous (1) samples")
        result = {"auroc": float(roc_auc_score(y, scores)), "auprc": float(average_precision_score(y, scores)),
                  "anomaly_rate": float(y.mean())}
        if self.threshold is not None and (score or self.default_score) == self.default_score:
            flagged = scores > self.threshold
            result.update(threshold=self.threshold, precision=float(precision_score(y, flagged, zero_division=0)),
                          recall=float(recall_score(y, flagged, zero_division=0)),
                          f1=float(f1_score(y, flagged, zero_division=0)))
        return result
