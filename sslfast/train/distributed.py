"""torch.distributed as launched by ``torchrun``: process group, device, reductions, RNG states per rank."""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "rng_state", "set_rng_state"]


@dataclasses.dataclass
class DistributedContext:
    """This process's place in the run: ``rank`` of ``world_size``, its ``device``, and whether a process
    group is up (``torchrun`` set ``WORLD_SIZE`` > 1)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place; returns the tensor)."""
        if self.initialized:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_object(self, obj: Any) -> list:
        if not self.initialized:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.initialized:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shutdown(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: Optional[str] = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL on CUDA), or run alone.

    ``device``: "cpu", "cuda" or None (CUDA when available). Each rank uses GPU ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA device is available")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    elif kind == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    ctx = DistributedContext(rank, world, local, dev)
    if world > 1 and not dist.is_initialized():
        # small bookkeeping reductions (counts, flags, eval sums) run on CPU tensors: gloo serves them on GPUs too
        dist.init_process_group("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
        ctx.initialized = True
    elif world > 1:
        ctx.initialized = True
    return ctx


def rng_state() -> dict:
    """Every RNG state of this process, as tensors and plain lists (loadable with ``weights_only``)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss], "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                              has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
