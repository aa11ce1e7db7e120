"""``vector_quantize_pytorch.VectorQuantize``'s interface on sslfast's :class:`VectorQuantizer`.

Code written for vector-quantize-pytorch swaps ``from vector_quantize_pytorch import VectorQuantize`` for
``from sslfast.nn import VectorQuantize``: the common constructor options and the call contract
(``quantized, indices, loss``; input (B, N, D), (B, D, N) with ``channel_last=False``, or an image feature map
(B, D, H, W) with ``accept_image_fmap=True``) are the same. The nearest code comes from the fused
``vq_lookup`` (no N×K distance matrix), the EMA statistics from ``vq_codebook_stats``. Gradients reach the input
through the straight-through estimator. An option this class does not implement raises ``ValueError`` naming it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sslfast.nn.vector_quantizer import VectorQuantizer

__all__ = ["VectorQuantize"]

# options of vector_quantize_pytorch.VectorQuantize this class does not implement, with the values that
# mean "off" (passing those is fine)
_UNSUPPORTED_DEFAULTS = {
    "separate_codebook_per_head": False, "freeze_codebook": False, "sync_kmeans": True,
    "layernorm_after_project_in": False, "accept_3d_fmap": False, "commitment_use_cross_entropy_loss": False,
    "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False, "orthogonal_reg_max_codes": None,
    "codebook_diversity_loss_weight": 0.0, "codebook_diversity_temperature": 100.0, "stochastic_sample_codes": False,
    "sample_codebook_temp": 1.0, "directional_reparam": False, "directional_reparam_variance": 0.005,
    "sync_codebook": None, "sync_affine_param": False, "vq_bridge": None, "manual_ema_update": False,
    "in_place_codebook_optimizer": None, "manual_in_place_optimizer_update": False, "affine_param": False,
    "affine_param_batch_decay": 0.99, "affine_param_codebook_decay": 0.9, "sync_update_v": 0.0,
    "return_zeros_for_masked_padding": True, "route_gradients_to_input": True,
}


class VectorQuantize(nn.Module):
    """Drop-in for ``vector_quantize_pytorch.VectorQuantize``, whose name it keeps (sslfast's own module is
    :class:`sslfast.nn.VectorQuantizer`; this one wraps it). Same defaults: ``decay=0.8``,
    ``commitment_weight=1.0``). ``use_cosine_sim``, several ``heads``, ``rotation_trick=True`` and the options
    listed in ``_UNSUPPORTED_DEFAULTS`` raise ``ValueError`` unless left at their "off" values."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: Optional[int] = None, heads: int = 1,
                 decay: float = 0.8, eps: float = 1e-5, kmeans_init: bool = False, kmeans_iters: int = 10,
                 use_cosine_sim: bool = False, threshold_ema_dead_code: float = 0, channel_last: bool = True,
                 accept_image_fmap: bool = False, commitment_weight: float = 1.0, straight_through: bool = False,
                 rotation_trick: Optional[bool] = None, ema_update: Optional[bool] = None,
                 learnable_codebook: Optional[bool] = None, backend: str = "auto", **options):
        super().__init__()
        unknown = [k for k in options if k not in _UNSUPPORTED_DEFAULTS]
        if unknown:
            raise TypeError(f"VectorQuantize: unknown argument(s) {unknown}")
        refused = [k for k, v in options.items() if v != _UNSUPPORTED_DEFAULTS[k]]
        if use_cosine_sim:
            refused.append("use_cosine_sim")
        if heads != 1:
            refused.append("heads")
        if rotation_trick:
            refused.append("rotation_trick (sslfast uses the straight-through estimator)")
        if refused:
            raise ValueError(f"sslfast VectorQuantize does not implement {', '.join(refused)}; leave them at "
                             f"vector-quantize-pytorch's defaults or use that library")
        codebook_dim = codebook_dim or dim
        self.dim, self.codebook_size, self.codebook_dim = dim, codebook_size, codebook_dim
        self.channel_last, self.accept_image_fmap = channel_last, accept_image_fmap
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        learned = bool(learnable_codebook) or ema_update is False  # the codebook learned by gradient
        self.quantizer = VectorQuantizer(codebook_size, codebook_dim, commitment_weight=commitment_weight,
                                         decay=None if learned else decay, eps=eps,
                                         dead_code_threshold=float(threshold_ema_dead_code), kmeans_init=kmeans_init,
                                         kmeans_iters=kmeans_iters, backend=backend)

    @property
    def codebook(self) -> torch.Tensor:
        """(codebook_size, codebook_dim)."""
        return self.quantizer.codebook

    def forward(self, x: torch.Tensor, indices=None, mask=None, lens=None, **unsupported):
        """``x`` (B, N, dim), (B, dim, N) without ``channel_last`` or (B, dim, H, W) with ``accept_image_fmap``
        → (quantized of ``x``'s shape, indices (B, N) or (B, H, W), commitment loss (a scalar; 0 in eval mode,
        as vector-quantize-pytorch))."""
        given = [k for k, v in {"indices": indices, "mask": mask, "lens": lens, **unsupported}.items() if v]
        if given:
            raise ValueError(f"sslfast VectorQuantize does not implement the forward argument(s) {given}")
        image = self.accept_image_fmap
        if image:
            if x.dim() != 4:
                raise ValueError(f"VectorQuantize(accept_image_fmap=True) takes (B, D, H, W), got {tuple(x.shape)}")
            b, d, h, w = x.shape
            x = x.permute(0, 2, 3, 1).reshape(b, h * w, d)
        elif not self.channel_last:
            x = x.transpose(1, 2)
        if x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantize: the feature dimension must be {self.dim}, got shape {tuple(x.shape)}")
        quantized, idx, loss = self.quantizer(self.project_in(x))
        quantized = self.project_out(quantized)
        if not self.training:
            loss = loss.new_zeros(())
        if image:
            quantized = quantized.reshape(b, h, w, d).permute(0, 3, 1, 2)
            idx = idx.reshape(b, h, w)
        elif not self.channel_last:
            quantized = quantized.transpose(1, 2)
        return quantized, idx, loss
