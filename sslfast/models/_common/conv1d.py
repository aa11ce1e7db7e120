"""GPT-2's ``Conv1D``: a linear layer whose weight is stored (in, out), as transformers stores it.

Where transformers is installed, the modules sslfast builds are instances of a class that is also
``transformers.pytorch_utils.Conv1D`` (:func:`conv1d`), so the tools that recognise transformers' class (PEFT's
LoRA / DoRA / IA3, quantizers) recognise them too. transformers is imported only when a model is built, never
by ``import sslfast``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from sslfast.ops.inference_linear import inference_linear

__all__ = ["Conv1D", "conv1d"]


class Conv1D(nn.Module):
    """transformers' ``Conv1D``: ``x @ weight + bias`` with ``weight`` (in, out); ``nf`` / ``nx`` as there."""

    def __init__(self, out_features: int, in_features: int):
        nn.Module.__init__(self)  # not super(): the transformers twin's own __init__ would re-create the weights
        self.nf, self.nx = out_features, in_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):  # (..., in) -> (..., out)
        return inference_linear(x, self.weight.t(), self.bias)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"


@functools.lru_cache(maxsize=None)
def _transformers_twin() -> type:
    """sslfast's Conv1D that is also transformers' Conv1D (sslfast's alone without transformers)."""
    try:
        from transformers.pytorch_utils import Conv1D as TransformersConv1D
    except ImportError:
        return Conv1D
    return type("TransformersConv1D", (Conv1D, TransformersConv1D),  # sslfast's methods first in the MRO
                {"__module__": __name__, "__doc__": Conv1D.__doc__})


def conv1d(out_features: int, in_features: int) -> Conv1D:
    """A new :class:`Conv1D`, an instance of transformers' Conv1D class too when transformers is installed."""
    return _transformers_twin()(out_features, in_features)


def __getattr__(name):  # unpickling a whole model finds the twin class by this name
    if name == "TransformersConv1D":
        return _transformers_twin()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
