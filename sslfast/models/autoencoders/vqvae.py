"""VQ-VAE (van den Oord et al., 2017): the code is a grid of codebook entries.

Convolutional encoder → :class:`sslfast.nn.VectorQuantizer` (nearest code by the fused ``vq_lookup``, EMA
codebook updates, dead-code restart, k-means initialisation) → convolutional decoder; vector inputs use MLPs
and ``num_latents`` code vectors. The loss is the reconstruction error plus the commitment loss; the outputs also
carry the two numbers users watch for codebook collapse: ``perplexity`` (exp of the entropy of the batch's code
usage: K when every code is used equally, 1 when one code takes everything) and ``codes_used`` (the fraction of
the K codes the batch uses). ``encode_indices`` / ``decode_indices`` round-trip the discrete code.
"""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.models._common.outputs import AutoEncoderOutput
from sslfast.models.autoencoders.autoencoder import AutoEncoderBase
from sslfast.models.autoencoders.blocks import (
    build_decoder,
    build_encoder,
    conv_feature_shape,
    reconstruction_loss,
)
from sslfast.nn.vector_quantizer import VectorQuantizer

__all__ = ["VQVAE", "code_usage"]


def code_usage(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, fraction of codes used) of a set of code indices."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p * p.clamp(min=1e-12).log()).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VQVAE(AutoEncoderBase):
    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        c = self.config
        if c.uses_conv:
            self.encoder = build_encoder(c, c.code_dim, spatial=True)
            self.decoder = build_decoder(c, c.code_dim, spatial=True)
            _, h, w = conv_feature_shape(c)
            self.code_shape = (h, w)
        else:
            self.encoder = build_encoder(c, c.num_latents * c.code_dim)
            self.decoder = build_decoder(c, c.num_latents * c.code_dim)
            self.code_shape = (c.num_latents,)
        self.quantizer = VectorQuantizer(c.num_codes, c.code_dim, commitment_weight=c.commitment_weight,
                                         decay=c.decay, dead_code_threshold=c.dead_code_threshold,
                                         kmeans_init=c.kmeans_init)
        self.post_init()

    def _init_weights(self, module):
        pass

    def _to_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder output → (N, *code_shape, code_dim)."""
        if self.config.uses_conv:
            return features.permute(0, 2, 3, 1)  # (N, h, w, D)
        return features.view(features.shape[0], self.config.num_latents, self.config.code_dim)

    def _from_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.config.uses_conv:
            return vectors.permute(0, 3, 1, 2)  # (N, D, h, w)
        return vectors.reshape(vectors.shape[0], -1)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """The discrete code of ``x``: (N, h, w) (images) or (N, num_latents) indices into the codebook."""
        was = self.training
        self.eval()
        try:
            _, indices, _ = self.quantizer(self._to_vectors(self.encoder(self.check_input(x))))
        finally:
            self.train(was)
        return indices

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Reconstruct inputs from code indices of shape (N, *code_shape)."""
        if indices.dtype.is_floating_point or tuple(indices.shape[1:]) != tuple(self.code_shape):
            raise ValueError(f"decode_indices: indices must be integers of shape (N, "
                             f"{', '.join(map(str, self.code_shape))}), got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.num_codes):
            raise ValueError(f"decode_indices: indices must be in [0, {self.config.num_codes}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        vectors = torch.nn.functional.embedding(indices.long(), self.quantizer.codebook)
        return self.to_output_space(self.decoder(self._from_vectors(vectors)))

    def forward(self, pixel_values: torch.Tensor, target: Optional[torch.Tensor] = None, return_dict=None):
        x = self.check_input(pixel_values)
        quantized, indices, vq_loss = self.quantizer(self._to_vectors(self.encoder(x)))
        logits = self.decoder(self._from_vectors(quantized))
        recon = reconstruction_loss(logits, x if target is None else target, self.config.loss)
        perplexity, used = code_usage(indices.detach(), self.config.num_codes)
        return self.output(AutoEncoderOutput, return_dict, loss=recon + vq_loss,
                           reconstruction=self.to_output_space(logits), latent=quantized, indices=indices,
                           reconstruction_loss=recon.detach(), vq_loss=vq_loss.detach(), perplexity=perplexity,
                           codes_used=used)
