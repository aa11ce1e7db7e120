"""The pretraining loop: accumulation to a global batch, bf16 autocast, clipping, schedules, evaluation,
checkpoints that resume exactly, signals, DDP / FSDP2 under ``torchrun``."""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
import warnings
from typing import Optional

import torch

from sslfast.train import checkpoint as ckpt
from sslfast.train.config import ConfigError, PretrainConfig
from sslfast.train.distributed import (
    DistributedContext,
    init_distributed,
    rng_state,
    set_rng_state,
)
from sslfast.train.lamb import Lamb
from sslfast.train.metrics import MetricsLog, plot_metrics
from sslfast.train.schedule import build_scheduler, warmup_steps
from sslfast.train.tasks import Task, task_for, to_device, unwrap

__all__ = ["Trainer", "RUN_FILES"]

RUN_FILES = ("run_config.yaml", "metrics.jsonl", "metrics.png", "checkpoints", "final", "tokenizer")
_FAULT_KILL = "SSLFAST_FAULT_KILL_AFTER_SAVE"  # test hook: SIGKILL this process right after saving that step
# dense bf16 tensor-core peaks (FLOP/s) for MFU, by device-name fragment
_BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
              "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def _peak_flops(device: torch.device, precision: str) -> Optional[float]:
    if device.type != "cuda" or precision != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _BF16_PEAK.items() if key in name), None)


class Trainer:
    """Pretrains ``config.model`` (see :class:`~sslfast.train.PretrainConfig`). ``task`` and ``model`` may be
    given to train another model in the same loop (the benchmark runs transformers' BERT this way)."""

    def __init__(self, config: PretrainConfig, *, task: Optional[Task] = None, model: Optional[torch.nn.Module] = None,
                 data=None, ctx: Optional[DistributedContext] = None, task_factory=None):
        """``config.out=None`` trains in memory: no run folder, checkpoints, metrics file or final save (the
        metrics stay in ``trainer.history``). ``data`` hands a dataset to the task instead of ``--data``."""
        self.config = config
        self.ctx = ctx or init_distributed(config.device)
        config.validate(self.ctx.world_size)
        self.task = task or (task_factory(config, self.ctx) if task_factory else task_for(config, self.ctx))
        self.task.given_data = data
        self._given_model = model
        self.in_memory = config.out is None
        self.history: list[dict] = []
        if model is not None and not type(unwrap(model)).__module__.startswith("sslfast."):
            self.task.foreign_model = True
        self.out = None if self.in_memory else os.path.abspath(config.out)
        self.step, self.tokens_seen = 0, 0
        self._stop_signal = None
        self._is_setup = False

    # --- setup ---------------------------------------------------------------------------------------------
    def setup(self) -> "Trainer":
        cfg, ctx = self.config, self.ctx
        resume_path = self._resolve_output_folder()
        self.micro_batch = cfg.micro_batch(ctx.world_size)
        self.accumulation = cfg.accumulation(ctx.world_size)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.task.prepare(self.out, resume_path)
        model = self._given_model if self._given_model is not None else self.task.build_model()
        model.to(ctx.device).train()
        if cfg.activation_checkpointing:
            unwrap(model).gradient_checkpointing_enable()
        self.model_unwrapped = model
        self.model = self._wrap(model)
        self.optimizer = self._optimizer()
        try:
            self.loader = self.task.train_loader(self.micro_batch, self.accumulation)
        except ValueError as err:  # e.g. a global batch larger than the data
            raise ConfigError(str(err)) from None
        self.total_steps = self._total_steps()
        self.warmup_steps = warmup_steps(cfg.warmup, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, warmup=self.warmup_steps, total=self.total_steps,
                                         schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio)
        self.eval_batches = self.task.eval_batches(self.micro_batch)
        torch.manual_seed(cfg.seed + 1 + 1009 * ctx.rank)  # dropout differs across ranks
        self._saved_step = None
        if resume_path is not None:
            self._load(resume_path)
        self.metrics = None
        if not self.in_memory:
            config_path = os.path.join(self.out, "run_config.yaml")
            if ctx.is_main and (resume_path is None or not os.path.isfile(config_path)):
                cfg.save(config_path)
            if ctx.is_main:
                self.metrics = MetricsLog(os.path.join(self.out, "metrics.jsonl"),
                                          resume_step=self.step if resume_path is not None else None)
        self._is_setup = True
        return self

    def _resolve_output_folder(self) -> Optional[str]:
        """Refuse to mix runs; clear the folder for --overwrite; find the checkpoint to resume from."""
        cfg, ctx = self.config, self.ctx
        if self.in_memory:
            if cfg.resume:
                raise ConfigError("--resume needs a run folder (out=None trains in memory)")
            return None
        held = [f for f in RUN_FILES if os.path.exists(os.path.join(self.out, f))]
        if held and not cfg.resume and not cfg.overwrite:
            raise ConfigError(f"{self.out} holds another run ({', '.join(held)}): pass --resume auto to continue "
                              f"it or --overwrite to replace it")
        if cfg.overwrite and not cfg.resume:
            if ctx.is_main:
                for name in held:
                    path = os.path.join(self.out, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            ctx.barrier()
        os.makedirs(self.out, exist_ok=True)
        if ctx.is_main:
            ckpt.remove_stale_temporaries(os.path.join(self.out, "checkpoints"))
        if not cfg.resume:
            return None
        if cfg.resume == "auto":
            source = os.path.join(self.out, "checkpoints")
        elif os.path.isfile(os.path.join(cfg.resume, ckpt.META_FILE)):
            return os.path.abspath(cfg.resume)
        elif os.path.isdir(os.path.join(cfg.resume, "checkpoints")):
            source = os.path.join(cfg.resume, "checkpoints")
        else:
            raise ConfigError(f"--resume {cfg.resume!r}: neither 'auto', a checkpoint folder (with {ckpt.META_FILE}) "
                              f"nor a run folder (with checkpoints/)")
        path = ckpt.latest_valid_checkpoint(source, set_aside_damaged=True) if ctx.is_main else None
        path = ctx.broadcast_object(path)
        if path is None:
            saved = os.path.join(self.out, "run_config.yaml")
            if os.path.isfile(saved):
                self._check_same_run(type(cfg).from_file(saved))
            if cfg.resume != "auto":
                raise ConfigError(f"--resume {cfg.resume!r}: no valid checkpoint in {source}")
            if ctx.is_main:
                print(f"sslfast pretrain: no checkpoint in {source} yet; starting from step 0")
        return path

    def _check_same_run(self, saved: PretrainConfig) -> None:
        differences = self.config.differences(saved)
        if differences:
            raise ConfigError("cannot resume: the saved run differs in\n  " + "\n  ".join(differences) +
                              "\n(start a new run in another --out, or pass the same options)")

    def _wrap(self, model):
        cfg, ctx = self.config, self.ctx
        if cfg.fsdp:
            if not ctx.initialized:
                raise ConfigError("--fsdp shards the model over processes: launch with torchrun --nproc_per_node=K")
            from torch.distributed.fsdp import fully_shard
            for layer in self.task.layers(model):
                fully_shard(layer)
            fully_shard(model)
        elif ctx.initialized:
            from torch.nn.parallel import DistributedDataParallel
            model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model)
        return model

    def _optimizer(self):
        cfg = self.config
        decay, no_decay = [], []
        for p in self.model.parameters():  # biases and LayerNorm weights (1-D) get no weight decay
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "lamb":
            return Lamb(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        fused = not cfg.fsdp  # the fused kernel takes plain tensors, not FSDP's DTensors
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)

    def _total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return cfg.max_steps
        per_step = max(1.0, self.task.mean_example_tokens() * cfg.global_batch_size)
        return max(1, math.ceil(cfg.max_tokens / per_step))

    # --- checkpoints ---------------------------------------------------------------------------------------
    def save(self) -> str:
        """Checkpoint the current step (every rank calls this); returns its folder. A step already saved is
        not written again (a signal right after a periodic save)."""
        cfg, ctx = self.config, self.ctx
        if self.in_memory:
            return None
        if self._saved_step is not None and self._saved_step[0] == self.step:
            return self._saved_step[1]
        rngs = ctx.all_gather_object(rng_state())
        directory = os.path.join(self.out, "checkpoints")
        state = {"optimizer": None if cfg.fsdp else self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "step": self.step, "tokens_seen": self.tokens_seen, "loader": self.loader.state_dict(), "rng": rngs,
                 "world_size": ctx.world_size, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                 "model": None if cfg.fsdp else unwrap(self.model).state_dict()}
        meta = {"fingerprint": self.task.fingerprint, "run_config": cfg.to_dict(), "world_size": ctx.world_size,
                "tokens_seen": self.tokens_seen}
        path = None
        if cfg.fsdp:
            tmp = ctx.broadcast_object(ckpt.begin_checkpoint(directory, self.step) if ctx.is_main else None)
            try:
                self._save_sharded(os.path.join(tmp, "sharded"))
                ctx.barrier()
                if ctx.is_main:
                    torch.save(state, os.path.join(tmp, ckpt.STATE_FILE))
                    path = ckpt.finish_checkpoint(directory, self.step, tmp, keep=cfg.keep_checkpoints, extra_meta=meta)
            except BaseException:
                if ctx.is_main:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
        elif ctx.is_main:
            path = ckpt.save_checkpoint(directory, self.step, lambda tmp: torch.save(state, os.path.join(
                tmp, ckpt.STATE_FILE)), keep=cfg.keep_checkpoints, extra_meta=meta)
        path = ctx.broadcast_object(path)
        ctx.barrier()
        self._saved_step = (self.step, path)
        if os.environ.get(_FAULT_KILL) == str(self.step):
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    def _save_sharded(self, folder):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=folder)

    def _load(self, path: str) -> None:
        cfg, ctx = self.config, self.ctx
        meta = ckpt.verify_checkpoint(path)
        saved = type(cfg).from_dict(meta["run_config"])
        self._check_same_run(saved)
        if meta.get("fingerprint") != self.task.fingerprint:
            keys = sorted(k for k in set(meta.get("fingerprint", {})) | set(self.task.fingerprint)
                          if meta.get("fingerprint", {}).get(k) != self.task.fingerprint.get(k))
            raise ConfigError(f"cannot resume from {path}: the checkpoint was made with a different {', '.join(keys)}")
        state = ckpt.load_state(path)
        if cfg.fsdp:
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import (
                get_state_dict,
                set_state_dict,
            )
            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            holder = {"model": model_state, "optimizer": optim_state}
            dcp.load(holder, checkpoint_id=os.path.join(path, "sharded"))
            set_state_dict(self.model, self.optimizer, model_state_dict=holder["model"],
                           optim_state_dict=holder["optimizer"])
        else:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        # the schedule continues from this step: the warm-up as it was, the decay over the (maybe new) length
        self.warmup_steps = int(state.get("warmup_steps", self.warmup_steps))
        self.scheduler = build_scheduler(self.optimizer, warmup=self.warmup_steps, total=self.total_steps,
                                         schedule=cfg.schedule, min_lr_ratio=cfg.min_lr_ratio)
        self.scheduler.last_epoch = self.step
        lrs = [base * self.scheduler.lr_lambdas[0](self.step) for base in self.scheduler.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.scheduler._last_lr = lrs
        if ctx.is_main and os.path.dirname(path) == os.path.join(self.out, "checkpoints"):
            for moved in ckpt.set_aside_after(os.path.dirname(path), self.step):
                warnings.warn(f"resuming from step {self.step}: the later checkpoint of the abandoned run was set "
                              f"aside as {moved}", stacklevel=2)
        if state["world_size"] == ctx.world_size:
            set_rng_state(state["rng"][ctx.rank])
        else:
            warnings.warn(f"resuming {state['world_size']} process(es)' run on {ctx.world_size}: the data order "
                          f"continues exactly, the random streams (dropout) are re-seeded", stacklevel=2)
            torch.manual_seed(cfg.seed + 7919 * self.step + 1009 * ctx.rank)
        if ctx.is_main:
            print(f"sslfast pretrain: resumed from {path} (step {self.step}, {self.tokens_seen} tokens)")

    # --- the loop ------------------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step over this rank's micro-batches of a global batch."""
        cfg, ctx = self.config, self.ctx
        counts = [self.task.counts(b) for b in micro_batches]
        keys = sorted(counts[0])
        totals_tensor = torch.tensor([[float(c[k]) for k in keys] for c in counts], dtype=torch.float64).sum(0)
        totals = dict(zip(keys, ctx.all_reduce_sum(totals_tensor).tolist()))
        totals["micro_batches"] = len(micro_batches)
        running = torch.zeros((), device=ctx.device, dtype=torch.float32)
        autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            no_sync = getattr(self.model, "no_sync", None)
            sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
            if cfg.fsdp:
                self.model.set_requires_gradient_sync(last)
            with sync:
                with autocast:
                    loss = self.task.loss(self.model, to_device(batch, ctx.device), totals, ctx.world_size)
                loss.backward()
            running += loss.detach().float()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        stats = torch.stack([ctx.all_reduce_sum(running) / ctx.world_size, grad_norm.float().to(ctx.device)])
        loss_value, norm_value = stats.tolist()  # one host sync per step
        skipped = not math.isfinite(norm_value)
        if skipped:
            warnings.warn(f"step {self.step + 1}: non-finite gradient norm ({norm_value}); the update is skipped",
                          stacklevel=2)
        else:
            self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += int(totals["tokens"])
        return {"loss": loss_value, "grad_norm": norm_value, "lr": lr, "tokens": int(totals["tokens"]),
                "skipped": skipped}

    def evaluate(self) -> dict:
        if not self.eval_batches:
            return {}
        self.model.eval()
        sharded = self.config.fsdp
        if sharded:  # the evaluation calls submodules directly: gather the root's own parameters first
            self.model.unshard()
        try:
            return self.task.evaluate(self.model, self.eval_batches)
        finally:
            if sharded:
                self.model.reshard()
            self.model.train()

    def _done(self) -> bool:
        cfg = self.config
        return ((cfg.max_steps is not None and self.step >= cfg.max_steps)
                or (cfg.max_tokens is not None and self.tokens_seen >= cfg.max_tokens))

    def _handle_signal(self, signum, frame):
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self._stop_signal = signum

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self._stop_signal is not None else 0.0], dtype=torch.float64)
        return bool(self.ctx.all_reduce_sum(flag).item() > 0) if self.ctx.initialized else self._stop_signal is not None

    def train(self) -> dict:
        """Run to ``max_steps`` / ``max_tokens``; returns a summary (final loss, eval metrics, paths)."""
        if not self._is_setup:
            self.setup()
        cfg, ctx = self.config, self.ctx
        handlers = {}
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._handle_signal)
        peak = _peak_flops(ctx.device, cfg.precision)
        flops_per_token = self.task.flops_per_token(self.model) if peak else None
        from tqdm.auto import tqdm
        bar = tqdm(total=self.total_steps, initial=self.step, desc=cfg.run_name(),
                   unit="step", disable=not (cfg.progress and ctx.is_main), dynamic_ncols=True)
        if self._done():  # a finished run resumed with the same length: nothing to do
            bar.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if ctx.is_main:
                print(f"sslfast pretrain: {self.out} already reached step {self.step}; raise --max-steps / "
                      f"--max-tokens to train further")
            return {"step": self.step, "tokens_seen": self.tokens_seen, "already_done": True}
        batches = self.loader.forever()
        last = {}
        window_tokens, window_start, data_time = 0, time.perf_counter(), 0.0
        try:
            while not self._done():
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(self.accumulation)]
                data_time += time.perf_counter() - t0
                last = self.train_step(micro)
                window_tokens += last["tokens"]
                if self.step % cfg.log_every == 0 or self._done():
                    elapsed = time.perf_counter() - window_start
                    record = {"step": self.step, "loss": last["loss"], "lr": last["lr"], "grad_norm": last["grad_norm"],
                              "tokens_seen": self.tokens_seen, "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                              "data_wait_fraction": data_time / max(elapsed, 1e-9), "epoch": self.loader.epoch}
                    if flops_per_token:
                        record["mfu"] = record["tokens_per_s"] * flops_per_token / peak
                    self._record(record)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                    lr=f"{last['lr']:.2e}", refresh=False)
                    window_tokens, window_start, data_time = 0, time.perf_counter(), 0.0
                bar.update(1)
                paused = time.perf_counter()  # evaluation and checkpoints do not count against throughput
                if cfg.eval_every and self.step % cfg.eval_every == 0 and not self._done():
                    self._log_eval()
                if cfg.save_every and self.step % cfg.save_every == 0 and not self._done():
                    self.save()
                window_start += time.perf_counter() - paused
                if self._stop_requested():
                    path = self.save()
                    name = signal.Signals(self._stop_signal).name if self._stop_signal else "a signal on another rank"
                    if ctx.is_main:
                        bar.write(f"sslfast pretrain: stopped by {name} at step {self.step}; checkpoint {path} "
                                  f"(continue with --resume auto)")
                    return {"stopped": name, "step": self.step, "checkpoint": path}
            eval_metrics = self._log_eval()
            path = self.save()
            summary = {"step": self.step, "tokens_seen": self.tokens_seen, "loss": last.get("loss"),
                       "checkpoint": path, **eval_metrics}
            if ctx.is_main and not self.in_memory:
                final = os.path.join(self.out, "final")
                self._save_final(final)
                summary["final"] = final
                if cfg.plot:
                    summary["plot"] = plot_metrics(self.metrics.path, os.path.join(self.out, "metrics.png"),
                                                   title=f"sslfast {cfg.run_name()}",
                                                   train_label=f"train loss ({cfg.objective})")
            elif cfg.fsdp and not self.in_memory:
                self._save_final(None)
            return summary
        finally:
            bar.close()
            batches.close()
            if self.metrics:
                self.metrics.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _log_eval(self) -> dict:
        metrics = self.evaluate()
        if metrics:
            self._record({"step": self.step, **metrics})
            self.task.after_evaluation(self.model, metrics, self.step, self.out)
        return metrics

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.metrics:
            self.metrics.write(record)

    def _save_final(self, directory: Optional[str]) -> None:
        if not self.config.fsdp:
            self.task.save_final(self.model, directory)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )
        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if directory is not None:
            model = self.task.build_model()
            model.load_state_dict(full)
            self.task.save_final(model, directory)
