"""Encoders and decoders shared by the auto-encoder family: MLPs for vectors, strided convolutions for images."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch import nn

from sslfast.models.config import ConfigMixin

__all__ = ["AutoEncoderConfig", "build_encoder", "build_decoder", "conv_feature_shape"]


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


def conv_feature_shape(config: AutoEncoderConfig) -> tuple[int, int, int]:
    """(channels, H, W) after the strided convolutions."""
    c, h, w = config.input_shape
    for _ in config.channels:
        h, w = (h + 1) // 2, (w + 1) // 2
    return config.channels[-1], h, w


def build_encoder(config: AutoEncoderConfig, out_features: Optional[int], spatial: bool = False) -> nn.Module:
    """Input → features. ``spatial`` keeps the conv feature map (for VQ-VAE); otherwise a vector of
    ``out_features``."""
    if not config.uses_conv:
        sizes = (config.num_inputs,) + config.hidden_sizes
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_features))
        return nn.Sequential(*layers)
    chans = (config.input_shape[0],) + config.channels
    layers = []
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
    if spatial:
        layers.append(nn.Conv2d(chans[-1], out_features, 1))  # (N, code_dim, h, w)
    else:
        c, h, w = conv_feature_shape(config)
        layers += [nn.Flatten(), nn.Linear(c * h * w, out_features)]
    return nn.Sequential(*layers)


class _Unflatten(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.view(x.shape[0], *self.shape)


class _CropTo(nn.Module):
    """Crops transposed-convolution output to the input's H × W (odd sizes round up on the way down)."""

    def __init__(self, h: int, w: int):
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x):
        return x[..., :self.h, :self.w]


def build_decoder(config: AutoEncoderConfig, in_features: int, spatial: bool = False) -> nn.Module:
    """Features → reconstruction logits of ``input_shape`` (a vector of ``in_features``, or a conv map of
    ``in_features`` channels when ``spatial``)."""
    if not config.uses_conv:
        sizes = (in_features,) + tuple(reversed(config.hidden_sizes))
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], config.num_inputs), _Unflatten(config.input_shape)]
        return nn.Sequential(*layers)
    c, h, w = conv_feature_shape(config)
    layers = [nn.Conv2d(in_features, c, 1), nn.ReLU()] if spatial else \
        [nn.Linear(in_features, c * h * w), nn.ReLU(), _Unflatten((c, h, w))]
    chans = tuple(reversed(config.channels)) + (config.input_shape[0],)
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(chans) - 2:
            layers.append(nn.ReLU())
    layers.append(_CropTo(*config.input_shape[1:]))
    return nn.Sequential(*layers)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, kind: str, reduction: str = "mean"):
    """MSE against the decoder output, or BCE with logits (inputs in [0, 1]). ``reduction``: "mean" over every
    element, "sample" (N,) sums per sample, "none"."""
    if kind == "bce":
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        loss = (logits - target).square()
    if reduction == "none":
        return loss
    if reduction == "sample":
        return loss.flatten(1).sum(1)
    return loss.mean()
