"""Model families the pretraining runner trains: one module per family."""
from sslfast.train.tasks.base import Task, to_device, unwrap


def task_for(config, ctx) -> Task:
    """The :class:`Task` of ``config.model``."""
    if config.model == "bert":
        from sslfast.train.tasks.bert import BertTask
        return BertTask(config, ctx)
    if config.model == "gpt2":
        from sslfast.train.tasks.gpt2 import GPT2Task
        return GPT2Task(config, ctx)
    if config.model in ("ae", "dae", "vae", "vqvae"):
        from sslfast.train.tasks.autoencoder import AutoEncoderTask
        return AutoEncoderTask(config, ctx)
    from sslfast.train.config import ConfigError
    raise ConfigError(f"unknown --model {config.model!r}")


__all__ = ["Task", "task_for", "to_device", "unwrap"]
