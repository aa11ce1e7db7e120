"""Encoders and decoders shared by the auto-encoder family: MLPs for vectors, strided convolutions for images."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sslfast.models.autoencoders.configuration import AutoEncoderConfig

__all__ = ["build_encoder", "build_decoder", "conv_feature_shape"]


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
