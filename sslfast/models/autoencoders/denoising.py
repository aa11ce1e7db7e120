"""The denoising auto-encoder: trained to rebuild the clean input from a corrupted copy (Vincent et al., 2008).

Corruption happens in training mode only, and is drawn from the model's own generator (seeded by
``config.noise_seed``), so a run is reproducible: ``gaussian`` adds N(0, σ²) noise (σ = ``noise_level``),
``masking`` zeroes a ``noise_level`` fraction of the elements, ``salt_and_pepper`` sets that fraction to 0 or 1.
"""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.models._common.outputs import AutoEncoderOutput
from sslfast.models.autoencoders.autoencoder import AutoEncoder
from sslfast.models.autoencoders.blocks import reconstruction_loss

__all__ = ["DenoisingAutoEncoder", "corrupt"]


def corrupt(x: torch.Tensor, kind: str, level: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A corrupted copy of ``x`` (``kind``: gaussian / masking / salt_and_pepper, strength ``level``)."""
    if level < 0 or (kind != "gaussian" and level > 1):
        raise ValueError(f"noise level must be >= 0 (and <= 1 for {kind}), got {level}")
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = torch.rand(x.shape, generator=generator, dtype=torch.float32, device=x.device)
    hit = u < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    if kind == "salt_and_pepper":
        salt = torch.rand(x.shape, generator=generator, dtype=torch.float32, device=x.device) < 0.5
        return torch.where(hit, salt.to(x.dtype), x)
    raise ValueError(f"unknown noise {kind!r}")


class DenoisingAutoEncoder(AutoEncoder):
    """:class:`~sslfast.models.AutoEncoder` that corrupts its input while training and is scored against the
    clean input; ``corrupt(x, generator)`` exposes the corruption (for evaluation with the same noise)."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.generator = torch.Generator().manual_seed(self.config.noise_seed)

    def corrupt(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        generator = generator if generator is not None else self._generator_for(x.device)
        return corrupt(x, self.config.noise, self.config.noise_level, generator)

    def _generator_for(self, device) -> torch.Generator:
        if self.generator.device != torch.device(device):
            state = self.generator.initial_seed()
            self.generator = torch.Generator(device=device).manual_seed(state)
        return self.generator

    def forward(self, pixel_values: torch.Tensor, target: Optional[torch.Tensor] = None, return_dict=None):
        clean = self.check_input(pixel_values)
        corrupted = self.corrupt(clean) if self.training else clean
        logits = self.decoder(self.encoder(corrupted))
        loss = reconstruction_loss(logits, clean if target is None else target, self.config.loss)
        z = self.encoder(clean) if not self.training else None
        return self.output(AutoEncoderOutput, return_dict, loss=loss, reconstruction=self.to_output_space(logits),
                           latent=z, reconstruction_loss=loss.detach(), corrupted=corrupted if self.training else None)
