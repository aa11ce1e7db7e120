"""The auto-encoder family's configuration (AE, denoising AE, VAE, VQ-VAE): one dataclass, each model reads
its own fields."""
from __future__ import annotations

import dataclasses
import math

from sslfast.models._common.configuration import ConfigMixin

__all__ = ["AutoEncoderConfig"]


@dataclasses.dataclass
class AutoEncoderConfig(ConfigMixin):
    """Configuration of every auto-encoder (AE, denoising AE, VAE, VQ-VAE); each model reads its own fields."""
    input_shape: tuple = (1, 8, 8)  # (C, H, W) images or (D,) vectors
    latent_dim: int = 16
    architecture: str = "auto"  # "conv" (images), "mlp", or "auto": conv for images of 8×8 and more
    hidden_sizes: tuple = (256, 128)  # MLP layers, input side first
    channels: tuple = (32, 64)  # conv layers (each halves H and W), input side first
    loss: str = "mse"  # "mse", or "bce" for inputs in [0, 1] (the decoder outputs logits, reconstruction = sigmoid)
    # denoising auto-encoder
    noise: str = "gaussian"  # "gaussian" (σ = noise_level), "masking" / "salt_and_pepper" (ratio = noise_level)
    noise_level: float = 0.3
    noise_seed: int = 0
    # variational auto-encoder
    beta: float = 1.0
    # VQ-VAE
    num_codes: int = 64
    code_dim: int = 16
    num_latents: int = 4  # code vectors per input when the encoder is an MLP
    commitment_weight: float = 0.25
    decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA count below which a code is restarted (0: never)
    kmeans_init: bool = True
    initializer_range: float = 0.02
    model_type: str = "sslfast-autoencoder"

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.hidden_sizes, self.channels = tuple(self.hidden_sizes), tuple(self.channels)
        if len(self.input_shape) not in (1, 3) or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W) or (D,) with positive sizes, got {self.input_shape}")
        if self.loss not in ("mse", "bce"):
            raise ValueError(f"loss must be 'mse' or 'bce', got {self.loss!r}")
        if self.architecture not in ("auto", "mlp", "conv"):
            raise ValueError(f"architecture must be 'auto', 'mlp' or 'conv', got {self.architecture!r}")
        if self.architecture == "conv" and len(self.input_shape) != 3:
            raise ValueError("architecture='conv' needs image inputs (C, H, W)")
        if self.noise not in ("gaussian", "masking", "salt_and_pepper"):
            raise ValueError(f"noise must be 'gaussian', 'masking' or 'salt_and_pepper', got {self.noise!r}")
        if self.latent_dim < 1 or self.num_codes < 1 or self.code_dim < 1:
            raise ValueError("latent_dim, num_codes and code_dim must be positive")

    @property
    def uses_conv(self) -> bool:
        if self.architecture != "auto":
            return self.architecture == "conv"
        return len(self.input_shape) == 3 and min(self.input_shape[1:]) >= 8

    @property
    def num_inputs(self) -> int:
        return math.prod(self.input_shape)
