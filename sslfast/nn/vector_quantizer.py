"""Vector quantizer (VQ-VAE) on the fused nearest-codebook lookup."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslfast.ops.vq import vq_codebook_stats, vq_lookup

__all__ = ["VectorQuantizer"]


class _StraightThrough(torch.autograd.Function):
    """``quantized`` in the forward, the identity for ``x``'s gradient in the backward: the value of
    ``x + (quantized - x).detach()`` without its two input-sized temporaries."""

    @staticmethod
    def forward(ctx, x, quantized):
        return quantized.view_as(quantized)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


class VectorQuantizer(nn.Module):
    """Maps each vector of the input to its nearest codebook entry.

    Forward takes ``x`` (..., dim) and returns ``(quantized, indices, loss)``: ``quantized`` has the
    straight-through gradient to ``x``; ``loss`` is ``commitment_weight * ||x - sg(q)||²`` (plus the
    codebook loss ``||sg(x) - q||²`` when the codebook is learned by gradient, ``decay=None``).

    With ``decay`` set, the codebook is a buffer updated by exponential moving averages of the per-code
    counts and sums (van den Oord et al., 2017), all-reduced across processes under torch.distributed.
    Codes whose smoothed count falls below ``dead_code_threshold`` are restarted from random inputs of
    the current batch. ``kmeans_init=True`` initializes the codebook by k-means on the first training
    batch. ``check_finite_inputs=False`` skips the NaN/Inf check of each lookup (one host sync per step on a
    GPU).
    """

    def __init__(self, num_codes: int, dim: int, *, commitment_weight: float = 0.25,
                 decay: float | None = 0.99, eps: float = 1e-5, dead_code_threshold: float = 0.0,
                 kmeans_init: bool = False, kmeans_iters: int = 10, backend: str = "auto",
                 check_finite_inputs: bool = True):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: num_codes and dim must be >= 1, got {num_codes}, {dim}")
        if decay is not None and not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1) or None, got {decay}")
        self.num_codes, self.dim = num_codes, dim
        self.commitment_weight, self.decay, self.eps = commitment_weight, decay, eps
        self.dead_code_threshold, self.kmeans_iters, self.backend = dead_code_threshold, kmeans_iters, backend
        self.check_finite_inputs = check_finite_inputs  # False: no NaN/Inf check, no host sync per step
        # the per-code statistics' CPU path is PyTorch's own index_add_ (no C++ kernel beats it)
        self.stats_backend = "auto" if backend == "cpp" else backend
        init = torch.randn(num_codes, dim) if not kmeans_init else torch.zeros(num_codes, dim)
        if decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._initialized_host = not kmeans_init  # the buffer's value, read without a device sync each step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized_host = bool(self.initialized)

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, commitment_weight={self.commitment_weight}, "
                f"decay={self.decay}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer: x's last dimension must be {self.dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.dim)  # (N, D)
        if self.training and not self._initialized_host:
            self._kmeans_init(flat.detach())
        codebook = self.codebook.to(x.dtype)
        indices, _ = vq_lookup(flat.detach(), codebook.detach(), backend=self.backend,
                               check_finite_inputs=self.check_finite_inputs)  # (N,)
        quantized = F.embedding(indices, self.codebook).to(x.dtype)  # (N, D)

        loss = self.commitment_weight * F.mse_loss(flat.float(), quantized.detach().float())
        if self.decay is None:
            loss = loss + F.mse_loss(quantized.float(), flat.detach().float())
        elif self.training:
            self._ema_update(flat.detach(), indices)

        quantized = _StraightThrough.apply(flat, quantized.detach())  # straight-through estimator
        return quantized.reshape(x.shape), indices.reshape(x.shape[:-1]), loss

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts, sums = vq_codebook_stats(flat, indices, self.num_codes, backend=self.stats_backend,
                                          check_indices=False)  # (K,), (K, D): vq_lookup's own indices
        _all_reduce_sum(counts, sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total  # Laplace
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.ema_count < self.dead_code_threshold  # (K,)
        n_dead = int(dead.sum())
        if n_dead == 0 or flat.shape[0] == 0:
            return
        picks = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        fresh = flat[picks].float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(fresh, src=0)  # every process restarts to the same vectors
        self.codebook[dead] = fresh
        self.ema_sum[dead] = fresh * self.dead_code_threshold
        self.ema_count[dead] = self.dead_code_threshold

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        data = flat.float()
        n = data.shape[0]
        if n == 0:
            return
        picks = torch.randperm(n, device=data.device)[: self.num_codes]
        if picks.numel() < self.num_codes:  # fewer points than codes: sample with replacement
            picks = torch.randint(0, n, (self.num_codes,), device=data.device)
        centroids = data[picks].clone()
        for _ in range(self.kmeans_iters):
            idx, _ = vq_lookup(data, centroids, backend=self.backend)
            counts, sums = vq_codebook_stats(data, idx, self.num_codes, backend=self.stats_backend, check_indices=False)
            _all_reduce_sum(counts, sums)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(centroids, src=0)
        self.codebook.data.copy_(centroids)
        if self.decay is not None:
            self.ema_sum.copy_(centroids)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
        self._initialized_host = True
