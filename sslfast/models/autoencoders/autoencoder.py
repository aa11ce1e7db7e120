"""The auto-encoder: an encoder squeezes the input into a small code, a decoder rebuilds the input from it.

``AutoEncoder(input_shape=(1, 8, 8), latent_dim=16)``: an MLP for vectors, strided convolutions for images
(:mod:`sslfast.models.autoencoders.blocks`); ``encode(x)`` → (N, latent_dim), ``decode(z)`` → the input's
shape, ``forward(x)`` → ``loss`` (MSE or BCE), ``reconstruction``, ``latent``. The rest of the family (denoising,
variational, VQ-VAE) builds on :class:`AutoEncoderBase`.
"""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.models._common.base import PreTrainedModel
from sslfast.models._common.outputs import AutoEncoderOutput
from sslfast.models.autoencoders.blocks import (
    build_decoder,
    build_encoder,
    reconstruction_loss,
)
from sslfast.models.autoencoders.configuration import AutoEncoderConfig

__all__ = ["AutoEncoderBase", "AutoEncoder", "AutoEncoderConfig"]


class AutoEncoderBase(PreTrainedModel):
    """Config handling, input checks, reconstruction and per-sample errors shared by the family."""
    config_class = AutoEncoderConfig
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False

    def __init__(self, config: Optional[AutoEncoderConfig] = None, **overrides):
        if config is None:
            config = AutoEncoderConfig(**overrides)
        elif overrides:
            config = AutoEncoderConfig(**{**config.to_dict(), **overrides})
        super().__init__(config)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, *input_shape): a clear error for the wrong shape, an empty batch or NaN/Inf."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: pixel_values must be a tensor, got {type(x).__name__}")
        want = tuple(self.config.input_shape)
        if x.dim() != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{type(self).__name__}: pixel_values must be (N, {', '.join(map(str, want))}), got "
                             f"{tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: empty batch")
        if not x.is_floating_point():
            x = x.float()
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x.flatten(1))).any(1).nonzero()[0])
            raise ValueError(f"{type(self).__name__}: pixel_values contain NaN or Inf (first at sample {bad})")
        return x

    def to_output_space(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder logits → a reconstruction in the input's space (sigmoid for the BCE loss)."""
        return torch.sigmoid(logits) if self.config.loss == "bce" else logits

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The model's reconstruction of ``x`` (eval mode: no corruption, no sampling)."""
        was = self.training
        self.eval()
        try:
            return self(pixel_values=x).reconstruction
        finally:
            self.train(was)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """(N,) squared error between ``x`` and its reconstruction: mean over elements, or the per-pixel
        maximum (``reduction="max"``)."""
        if reduction not in ("mean", "max"):
            raise ValueError(f"reduction must be 'mean' or 'max', got {reduction!r}")
        err = (self.reconstruct(x) - self.check_input(x)).square().flatten(1)
        return err.mean(1) if reduction == "mean" else err.max(1).values


class AutoEncoder(AutoEncoderBase):
    """Deterministic auto-encoder: ``encode`` → (N, latent_dim) code, ``decode`` → reconstruction."""

    def __init__(self, config: Optional[AutoEncoderConfig] = None, **overrides):
        super().__init__(config, **overrides)
        self.encoder = build_encoder(self.config, self.config.latent_dim)
        self.decoder = build_decoder(self.config, self.config.latent_dim)
        self.post_init()

    def _init_weights(self, module):  # PyTorch's default initialisation suits these small nets
        pass

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.check_input(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction (in the input's space) of codes ``z`` (N, latent_dim)."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"decode: z must be (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.to_output_space(self.decoder(z))

    def forward(self, pixel_values: torch.Tensor, target: Optional[torch.Tensor] = None, return_dict=None):
        """``pixel_values`` (N, *input_shape); ``target`` defaults to the input (the clean input for a DAE)."""
        x = self.check_input(pixel_values)
        z = self.encoder(x)
        logits = self.decoder(z)
        target = x if target is None else target
        loss = reconstruction_loss(logits, target, self.config.loss)
        return self.output(AutoEncoderOutput, return_dict, loss=loss, reconstruction=self.to_output_space(logits),
                           latent=z, reconstruction_loss=loss.detach())
