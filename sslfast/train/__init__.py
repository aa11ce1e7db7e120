"""Pretraining: ``sslfast pretrain`` / :func:`pretrain`, the :class:`Trainer` loop, the LAMB optimizer,
atomic checksummed checkpoints that resume exactly, and ``torchrun`` multi-process (DDP / FSDP2)."""
from sslfast.train.config import ConfigError, PretrainConfig
from sslfast.train.lamb import Lamb
from sslfast.train.pretrain import pretrain
from sslfast.train.schedule import lr_multiplier
from sslfast.train.trainer import Trainer

__all__ = ["pretrain", "PretrainConfig", "ConfigError", "Trainer", "Lamb", "lr_multiplier"]
