"""The training tasks of ``sslfast pretrain``, one per kind of objective; a family record
(:mod:`sslfast.models.families`) names its task."""
from sslfast.models.families import FAMILIES
from sslfast.train.config import ConfigError
from sslfast.train.tasks.autoencoder import AutoEncoderTask
from sslfast.train.tasks.base import Task, to_device, unwrap
from sslfast.train.tasks.bert import MaskedLMTask
from sslfast.train.tasks.gpt2 import GPT2Task

TASKS = {"masked-lm": MaskedLMTask, "causal-lm": GPT2Task, "autoencoder": AutoEncoderTask}


def task_for(config, ctx) -> Task:
    """The :class:`Task` of ``config.model``'s family."""
    if config.model not in FAMILIES:
        raise ConfigError(f"unknown --model {config.model!r}; choose from {list(FAMILIES)}")
    return TASKS[FAMILIES[config.model].task](config, ctx)


__all__ = ["Task", "TASKS", "task_for", "to_device", "unwrap"]
