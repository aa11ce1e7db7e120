"""What the training loop needs from a model family: data, model, loss, evaluation, the final save."""
from __future__ import annotations

from typing import Optional

import torch

from sslfast.data import BatchLoader, example_seeds
from sslfast.train.config import PretrainConfig
from sslfast.train.distributed import DistributedContext

__all__ = ["Task", "to_device", "unwrap"]


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of ``batch`` on ``device`` (``non_blocking`` from pinned memory is not worth it on CPU)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


class Task:
    """One model family's pretraining. Subclasses fill the data in :meth:`prepare` (called on every rank,
    rank 0 first for anything cached on disk) and implement the hooks below."""

    name = "task"

    def __init__(self, config: PretrainConfig, ctx: DistributedContext):
        self.config, self.ctx = config, ctx
        self.train_dataset = self.eval_dataset = self.collate = None
        self.fingerprint: dict = {}  # what identifies the data and model of a run (checked on resume)
        self.foreign_model = False  # a model that is not sslfast's (e.g. transformers'): padded batches, plain loss
        self.given_data = None  # data handed over in Python (Trainer(data=...)) instead of --data

    # --- data ---
    def prepare(self, out_dir: str, resume_path: Optional[str]) -> None:
        """Build the datasets, tokenizer and collator (``resume_path``: the checkpoint a resumed run starts
        from, whose run folder may hold the tokenizer)."""
        raise NotImplementedError

    def mean_example_tokens(self) -> float:
        """Average input tokens per training example (sizes a ``--max-tokens`` schedule)."""
        lengths = getattr(self.train_dataset, "lengths", None)
        if lengths is not None:
            return float(lengths().mean())
        picks = range(0, len(self.train_dataset), max(1, len(self.train_dataset) // 512))
        return sum(len(self.train_dataset[i]["input_ids"]) for i in picks) / len(picks)

    def train_loader(self, micro_batch: int, accumulation: int) -> BatchLoader:
        return BatchLoader(self.train_dataset, self.collate, batch_size=micro_batch, seed=self.config.seed,
                           rank=self.ctx.rank, world_size=self.ctx.world_size, accumulation=accumulation,
                           prefetch=self.config.prefetch)

    def after_evaluation(self, model, metrics: dict, step: int, out_dir: Optional[str]) -> None:
        """Called on every rank after each evaluation (fine-tuning keeps its best weights here)."""

    def eval_batches(self, micro_batch: int) -> list[dict]:
        """This rank's share of the held-out examples: the first ``eval_batches × global_batch_size`` (fixed,
        the same at every evaluation and whatever the world size), dealt round-robin to the ranks. Every rank
        gets the same number of batches (a rank with fewer examples repeats one with ``eval_weight`` 0), so
        sharded models run their collectives in step."""
        if self.eval_dataset is None or len(self.eval_dataset) == 0 or self.config.eval_batches == 0:
            return []
        count = min(len(self.eval_dataset), self.config.eval_batches * self.config.global_batch_size)
        world = self.ctx.world_size
        per_rank = -(-count // world)
        batches = []
        for k in range(0, per_rank, micro_batch):
            positions = [self.ctx.rank + world * i for i in range(k, min(k + micro_batch, per_rank))]
            real = [p for p in positions if p < count]
            chunk = real or [self.ctx.rank % count]
            batch = self.collate([self.eval_dataset[i] for i in chunk], example_seeds(self.config.seed, 0, chunk))
            batch["eval_weight"] = 1.0 if real else 0.0
            batches.append(batch)
        return batches

    # --- model ---
    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def layers(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """The repeated blocks (sharded one by one under FSDP)."""
        return []

    # --- step ---
    def counts(self, batch: dict) -> dict[str, int]:
        """Host-side counts of a micro-batch: ``tokens`` (real input tokens, for throughput) and whatever
        :meth:`loss` normalises by."""
        raise NotImplementedError

    def loss(self, model, batch: dict, totals: dict[str, float], world_size: int) -> torch.Tensor:
        """This micro-batch's share of the global batch's loss: the gradients of all micro-batches of all
        ranks, averaged over ranks by DDP, add up to the gradient of the global batch's mean loss."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model, batches: list[dict]) -> dict[str, float]:
        raise NotImplementedError

    def save_final(self, model, directory: str) -> None:
        raise NotImplementedError

    def flops_per_token(self, model) -> Optional[float]:
        """Training FLOPs per token (forward + backward) for MFU, or None."""
        return None
