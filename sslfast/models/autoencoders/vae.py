"""The variational auto-encoder (Kingma & Welling, 2014) with a β-weighted KL term (β-VAE, Higgins et al., 2017).

The encoder gives a Gaussian q(z|x) = N(mu, exp(logvar)); training samples z by the reparameterisation
mu + ε·σ, evaluation uses mu. The loss per sample is the reconstruction error summed over the input's elements
plus β · KL(q(z|x) ‖ N(0, I)), averaged over the batch. ``sample(n, generator)`` decodes draws from the prior.
"""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.models._common.outputs import AutoEncoderOutput
from sslfast.models.autoencoders.autoencoder import AutoEncoderBase
from sslfast.models.autoencoders.blocks import (
    build_decoder,
    build_encoder,
    reconstruction_loss,
)

__all__ = ["VariationalAutoEncoder", "kl_to_standard_normal"]


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(N,) KL(N(mu, exp(logvar)) || N(0, I)) per sample."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(1)


class VariationalAutoEncoder(AutoEncoderBase):
    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.encoder = build_encoder(self.config, 2 * self.config.latent_dim)  # mu and log-variance
        self.decoder = build_decoder(self.config, self.config.latent_dim)
        self.post_init()

    def _init_weights(self, module):
        pass

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, latent_dim)."""
        mu, logvar = self.encoder(self.check_input(x)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"decode: z must be (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return self.to_output_space(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` new inputs decoded from the prior N(0, I)."""
        if n < 1:
            raise ValueError(f"sample: n must be >= 1, got {n}")
        p = next(self.parameters())
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=p.device, dtype=p.dtype) \
            if generator is None or generator.device == p.device else \
            torch.randn(n, self.config.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.decode(z)

    def forward(self, pixel_values: torch.Tensor, target: Optional[torch.Tensor] = None, return_dict=None):
        x = self.check_input(pixel_values)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        logits = self.decoder(z)
        recon = reconstruction_loss(logits, x if target is None else target, self.config.loss, "sample")  # (N,)
        kl = kl_to_standard_normal(mu, logvar)  # (N,)
        loss = (recon + self.config.beta * kl).mean()
        return self.output(AutoEncoderOutput, return_dict, loss=loss, reconstruction=self.to_output_space(logits),
                           latent=mu, reconstruction_loss=recon.mean().detach(), mu=mu, logvar=logvar,
                           kl=kl.mean().detach())
