"""sslfast.train: LAMB, schedules, the pretraining runner end to end, exact resume, checkpoints, torchrun."""
import errno
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sslfast.train import (
    ConfigError,
    Lamb,
    PretrainConfig,
    Trainer,
    lr_multiplier,
    pretrain,
)
from sslfast.train import checkpoint as ckpt

TINY = dict(model="bert", size="tiny", max_length=64, global_batch_size=16, micro_batch_size=8, max_steps=6,
            eval_every=3, save_every=3, warmup=2, progress=False, seed=0, eval_batches=2)


def run_cli(*args, env=None, launcher=None, check=True):
    """``sslfast pretrain ARGS`` in a fresh process (the same cache folder as this test session)."""
    cmd = (launcher or [sys.executable, "-m", "sslfast"]) + ["pretrain", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def cli_args(out, **overrides):
    values = {**TINY, **overrides}
    args = []
    for key, value in values.items():
        if key == "progress":
            args += [] if value else ["--no-progress"]
        elif key == "plot":
            args += [] if value else ["--no-plot"]
        elif value is True:
            args.append("--" + key.replace("_", "-"))
        elif value is not None and value is not False:
            args += ["--" + key.replace("_", "-"), value]
    return args + ["--out", out]


def weights(run):
    return load_file(os.path.join(run, "final", "model.safetensors"))


def metrics(run, drop=("tokens_per_s", "data_wait_fraction")):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in f]


# --- LAMB ---------------------------------------------------------------------------------------------------

def lamb_reference(x, g, m, v, t, lr, b1, b2, eps, wd):
    """One LAMB step in float64, written from the paper's Algorithm 2 (φ = identity, bias-corrected)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    r = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    u = r + wd * x
    w_norm, u_norm = x.norm(), u.norm()
    trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return x - lr * trust * u, m, v


def test_lamb_matches_the_papers_update_in_float64(seed):
    shapes = [(17, 9), (33,), (4, 3, 5), (6,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    with torch.no_grad():
        params[3].zero_()  # ‖x‖ = 0: trust ratio 1
    groups = [{"params": params[:3], "weight_decay": 0.1}, {"params": params[3:], "weight_decay": 0.0}]
    opt = Lamb(groups, lr=0.02, betas=(0.9, 0.99), eps=1e-6)
    initial = [p.detach().clone() for p in params]
    ref = [[p.detach().double().clone(), torch.zeros(p.shape, dtype=torch.float64),
            torch.zeros(p.shape, dtype=torch.float64)] for p in params]
    for t in range(1, 8):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            x, m, v = ref[i]
            ref[i] = list(lamb_reference(x, g.double(), m, v, t, 0.02, 0.9, 0.99, 1e-6, 0.1 if i < 3 else 0.0))
    for p, (x, _, _) in zip(params, ref):
        torch.testing.assert_close(p.detach().double(), x, rtol=0, atol=2e-6)
    moved = [(p.detach() - s).abs().max().item() for p, s in zip(params, initial)]
    assert min(moved) > 1e-3, f"the parameters barely moved ({moved}): the comparison would be vacuous"
    with pytest.raises(ValueError, match="betas"):
        Lamb(params, betas=(1.0, 0.9))


def test_schedules():
    linear = [lr_multiplier(s, warmup=4, total=10, schedule="linear") for s in range(10)]
    assert linear[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # the peak once, at step `warmup`
    assert linear[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])  # the last step still learns
    assert [lr_multiplier(s, warmup=0, total=4, schedule="linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_multiplier(7, warmup=4, total=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_multiplier(10, warmup=4, total=10, schedule="cosine", min_lr_ratio=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier(0, warmup=0, total=1, schedule="step")


# --- configuration ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(model="resnet"), "unknown model 'resnet'"),
    (dict(size="huge"), "unknown size 'huge'"),
    (dict(objective="clm"), "unknown objective 'clm'"),
    (dict(global_batch_size=20, micro_batch_size=8), "not divisible by --micro-batch-size 8"),
    (dict(max_steps=None), "--max-steps or --max-tokens"),
    (dict(optimizer="sgd"), "unknown optimizer"),
    (dict(warmup=-1), "--warmup must be non-negative"),
    (dict(beta1=1.5), "--beta1 must be in"),
    (dict(eval_fraction=1.5), "--eval-fraction must be in"),
    (dict(min_lr_ratio=2.0), "--min-lr-ratio must be in"),
    (dict(save_every=-1), "--save-every must be non-negative"),
    (dict(max_grad_norm=float("nan")), "--max-grad-norm must be finite"),
])
def test_bad_options_are_refused_with_the_option_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        PretrainConfig.from_dict({**TINY, **overrides}).validate()


def test_a_global_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="fill no global batch"):
        Trainer(PretrainConfig.from_dict({**TINY, "out": str(tmp_path / "r"), "global_batch_size": 100000,
                                          "micro_batch_size": None})).setup()


def test_cli_bool_flags_override_a_config_file(tmp_path):
    import argparse

    from sslfast.cli import main  # noqa: F401 (the parser lives there)
    from sslfast.train.pretrain import add_pretrain_parser, config_from_args
    parser = argparse.ArgumentParser()
    add_pretrain_parser(parser.add_subparsers())
    path = tmp_path / "run.yaml"
    path.write_text("progress: false\ncompile: true\nmax_steps: 3\n")
    args = parser.parse_args(["pretrain", "--config", str(path), "--progress", "--no-compile"])
    config = config_from_args(args)
    assert config.progress is True and config.compile is False and config.max_steps == 3


def test_cli_rejects_bad_options_with_exit_code_2(tmp_path):
    proc = run_cli(*cli_args(str(tmp_path / "r"), global_batch_size=12, micro_batch_size=8), check=False)
    assert proc.returncode == 2 and "not divisible" in proc.stderr
    proc = run_cli("--size", "huge", "--max-steps", "1", check=False)
    assert proc.returncode == 2 and "invalid choice: 'huge'" in proc.stderr


# --- a run end to end ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "bert")
    summary = pretrain({**TINY, "out": out})
    return out, summary


def test_run_writes_metrics_checkpoints_plot_and_a_transformers_model(finished_run):
    from transformers import AutoTokenizer, BertForPreTraining
    out, summary = finished_run
    records = metrics(out)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in steps)
    evals = [r for r in records if "eval_mlm_accuracy" in r]
    assert [r["step"] for r in evals] == [3, 6] and "eval_nsp_accuracy" in evals[0]
    assert summary["step"] == 6 and os.path.isfile(os.path.join(out, "metrics.png"))
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(os.path.join(out, "checkpoints"))] == \
        ["step-00000006", "step-00000003"]
    saved = PretrainConfig.from_file(os.path.join(out, "run_config.yaml"))
    assert saved.to_dict() == PretrainConfig.from_dict({**TINY, "out": out}).to_dict()
    final = os.path.join(out, "final")
    hf = BertForPreTraining.from_pretrained(final, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    enc = tokenizer(["Return the sum of the values.", "Raise an error."], padding=True, return_tensors="pt")
    from sslfast.models import BertForPreTraining as Ours
    ours = Ours.from_pretrained(final).eval()
    with torch.no_grad():
        a, b = hf(**enc), ours(**enc)
    torch.testing.assert_close(b.seq_relationship_logits, a.seq_relationship_logits, atol=1e-4, rtol=0)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(b.prediction_logits[real], a.prediction_logits[real], atol=1e-4, rtol=0)


def test_a_second_run_into_the_same_folder_is_refused_unless_asked(finished_run, tmp_path):
    out, _ = finished_run
    with pytest.raises(ConfigError, match="holds another run.*--resume auto.*--overwrite"):
        Trainer(PretrainConfig.from_dict({**TINY, "out": out})).setup()
    with pytest.raises(ConfigError, match="lr: saved 0.0005, now 0.001"):  # resuming with other options
        Trainer(PretrainConfig.from_dict({**TINY, "out": out, "resume": "auto", "lr": 1e-3})).setup()
    copy = str(tmp_path / "copy")
    import shutil
    shutil.copytree(out, copy)
    summary = pretrain({**TINY, "out": copy, "overwrite": True, "max_steps": 2, "save_every": 0, "eval_every": 0})
    assert summary["step"] == 2 and [r["step"] for r in metrics(copy) if "loss" in r] == [1, 2]


def test_resume_extends_a_finished_run(finished_run, tmp_path):
    out, _ = finished_run
    import shutil
    longer = str(tmp_path / "longer")
    shutil.copytree(out, longer)
    summary = pretrain({**TINY, "out": longer, "resume": "auto", "max_steps": 8})
    assert summary["step"] == 8
    assert [r["step"] for r in metrics(longer) if "loss" in r] == list(range(1, 9))


def test_resume_with_a_longer_run_continues_the_schedule_smoothly(finished_run, tmp_path):
    out, _ = finished_run
    import shutil
    longer = str(tmp_path / "longer")
    shutil.copytree(out, longer)
    pretrain({**TINY, "out": longer, "resume": "auto", "max_steps": 10, "eval_every": 0, "save_every": 0})
    lrs = {r["step"]: r["lr"] for r in metrics(longer) if "lr" in r}
    warmup = 2  # TINY's warm-up stays in steps: the decay is recomputed over 10 steps from step 6 on
    for step in range(7, 11):
        assert lrs[step] == pytest.approx(TINY.get("lr", 5e-4) * lr_multiplier(step - 1, warmup=warmup, total=10,
                                                                                schedule="linear"))
    assert min(lrs[s] for s in range(7, 11)) > 0


def test_resume_sets_aside_damaged_and_abandoned_checkpoints(finished_run, tmp_path):
    out, _ = finished_run
    import shutil
    run = str(tmp_path / "run")
    shutil.copytree(out, run)
    checkpoints = os.path.join(run, "checkpoints")
    with open(os.path.join(checkpoints, "step-00000006", ckpt.STATE_FILE), "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="step-00000006.*truncated"):
        pretrain({**TINY, "out": run, "resume": "auto", "keep_checkpoints": 1, "save_every": 1, "max_steps": 5,
                  "eval_every": 0})
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(checkpoints)] == ["step-00000005"]
    assert any(n.startswith("step-00000006.damaged-") for n in os.listdir(checkpoints))
    # resuming from an explicit older checkpoint abandons the later ones, which are kept aside
    again = str(tmp_path / "again")
    shutil.copytree(out, again)
    older = os.path.join(again, "checkpoints", "step-00000003")
    with pytest.warns(UserWarning, match="set aside"):
        summary = pretrain({**TINY, "out": again, "resume": older, "max_steps": 4, "eval_every": 0})
    assert summary["step"] == 4
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(os.path.join(again, "checkpoints"))] == \
        ["step-00000004", "step-00000003"]


def test_resuming_a_finished_run_changes_nothing(finished_run, tmp_path):
    out, _ = finished_run
    import shutil
    done = str(tmp_path / "done")
    shutil.copytree(out, done)
    before = metrics(done)
    summary = pretrain({**TINY, "out": done, "resume": "auto"})
    assert summary["already_done"] and summary["step"] == 6 and metrics(done) == before


def test_zero_max_grad_norm_turns_clipping_off(tmp_path):
    summary = pretrain({**TINY, "out": str(tmp_path / "r"), "max_grad_norm": 0.0, "max_steps": 2,
                        "eval_every": 0, "save_every": 0, "plot": False, "weight_decay": 0.0})
    norms = [r["grad_norm"] for r in metrics(str(tmp_path / "r")) if "grad_norm" in r]
    assert summary["step"] == 2 and all(n > 0 for n in norms)
    final = load_file(os.path.join(str(tmp_path / "r"), "final", "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in final.values())


def test_tokenizer_must_match_the_model_vocabulary(finished_run, tmp_path):
    out, _ = finished_run
    config = {"model_type": "bert", "vocab_size": 1234, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="tokenizer has \\d+ tokens but the model's vocab_size is 1234"):
        Trainer(PretrainConfig.from_dict({**TINY, "out": str(tmp_path / "r"), "model_config": str(path),
                                          "tokenizer": os.path.join(out, "tokenizer")})).setup()


# --- exact resume, damaged and failed checkpoints -------------------------------------------------------------

def test_sigkill_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    """Dropout on, fp32, CPU: 8 steps straight vs. killed (SIGKILL) right after the step-4 checkpoint and
    resumed: the same weights bit for bit and the same metrics."""
    args = dict(max_steps=8, save_every=4, eval_every=3, dropout=0.1)
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    run_cli(*cli_args(straight, **args))
    proc = run_cli(*cli_args(killed, **args), env={"SSLFAST_FAULT_KILL_AFTER_SAVE": "4"}, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not os.path.exists(os.path.join(killed, "final")), "the killed run must not have finished"
    resumed = run_cli(*cli_args(killed, **args, resume="auto"))
    assert "resumed from" in resumed.stdout and "step-00000004" in resumed.stdout
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(straight) == metrics(killed)


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path):
    directory = str(tmp_path / "checkpoints")
    for step in (1, 2, 3):
        ckpt.save_checkpoint(directory, step, lambda tmp, s=step: torch.save({"step": s}, os.path.join(
            tmp, ckpt.STATE_FILE)), keep=5)
    newest = os.path.join(directory, "step-00000003", ckpt.STATE_FILE)
    data = bytearray(open(newest, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped bit: same size, wrong checksum
    open(newest, "wb").write(bytes(data))
    with pytest.warns(UserWarning, match="step-00000003.*SHA-256"):
        assert ckpt.latest_valid_checkpoint(directory).endswith("step-00000002")
    with open(os.path.join(directory, "step-00000002", ckpt.STATE_FILE), "r+b") as f:
        f.truncate(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.latest_valid_checkpoint(directory).endswith("step-00000001")
    assert any("step-00000002" in str(w.message) and "truncated" in str(w.message) for w in caught)


def test_a_failure_while_writing_leaves_the_previous_checkpoint_intact(tmp_path):
    directory = str(tmp_path / "checkpoints")
    ckpt.save_checkpoint(directory, 1, lambda tmp: torch.save({"w": torch.ones(3)}, os.path.join(tmp, "state.pt")))

    def disk_full(tmp):
        with open(os.path.join(tmp, ckpt.STATE_FILE), "wb") as f:
            f.write(b"\0" * 100)  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(directory, 2, disk_full)
    assert os.listdir(directory) == ["step-00000001"], "a temporary folder or a partial checkpoint was left"
    assert ckpt.latest_valid_checkpoint(directory).endswith("step-00000001")
    assert torch.equal(ckpt.load_state(ckpt.latest_valid_checkpoint(directory))["w"], torch.ones(3))


def test_trainer_save_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "r")
    trainer = Trainer(PretrainConfig.from_dict({**TINY, "out": out, "max_steps": 2, "eval_every": 0,
                                                "save_every": 1})).setup()
    batches = trainer.loader.forever()
    trainer.train_step([next(batches) for _ in range(trainer.accumulation)])
    first = trainer.save()
    trainer.train_step([next(batches) for _ in range(trainer.accumulation)])
    real_save = torch.save

    def failing_save(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(64)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        trainer.save()
    monkeypatch.undo()
    batches.close()
    assert ckpt.latest_valid_checkpoint(os.path.join(out, "checkpoints")) == first


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    out = str(tmp_path / "r")
    trainer = Trainer(PretrainConfig.from_dict({**TINY, "out": out, "max_steps": 6, "save_every": 0,
                                                "eval_every": 0}))
    real_step = trainer.train_step

    def step_then_signal(micro):
        result = real_step(micro)
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result
    trainer.train_step = step_then_signal
    summary = trainer.train()
    assert summary["stopped"] == "SIGTERM" and summary["step"] == 2
    assert ckpt.latest_valid_checkpoint(os.path.join(out, "checkpoints")).endswith("step-00000002")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    resumed = pretrain({**TINY, "out": out, "max_steps": 6, "save_every": 0, "eval_every": 0, "resume": "auto"})
    assert resumed["step"] == 6


def test_bf16_and_lamb_runs_track_fp32(tmp_path):
    common = {**TINY, "optimizer": "lamb", "objective": "mlm+sop", "max_steps": 3, "eval_every": 0,
              "save_every": 0, "plot": False, "dropout": 0.0}
    summary = pretrain({**common, "out": str(tmp_path / "bf16"), "precision": "bf16"})
    pretrain({**common, "out": str(tmp_path / "fp32"), "precision": "fp32"})
    assert "eval_sop_accuracy" in summary
    bf16 = [r["loss"] for r in metrics(str(tmp_path / "bf16")) if "loss" in r]
    fp32 = [r["loss"] for r in metrics(str(tmp_path / "fp32")) if "loss" in r]
    assert len(bf16) == 3 and np.allclose(bf16, fp32, rtol=0.02), (bf16, fp32)
    assert bf16 != fp32, "bf16 autocast did not change the arithmetic"


# --- torchrun -------------------------------------------------------------------------------------------------

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sslfast"]


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_equal_one_process_accumulating(tmp_path, sharding):
    """Dropout off: 2 gloo processes with one micro-batch each == 1 process accumulating the same two."""
    args = dict(max_steps=4, save_every=2, eval_every=2, dropout=0.0, plot=False, max_grad_norm=0.0,
                eval_batches=100)  # no clipping: the gradients' scale is compared; all held-out examples
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    single_thread = {"OMP_NUM_THREADS": "1"}  # torchrun's default per process: the same BLAS blocking
    run_cli(*cli_args(one, **args), env=single_thread)
    run_cli(*cli_args(two, **args, fsdp=sharding == "fsdp"), launcher=TORCHRUN, env=single_thread)
    a, b = weights(one), weights(two)
    weight_gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert weight_gap < 1e-6, weight_gap
    la = [r["loss"] for r in metrics(one) if "loss" in r]
    lb = [r["loss"] for r in metrics(two) if "loss" in r]
    # FSDP reduce-scatters the gradients in another order than accumulation sums them: the weights, and so the
    # fp32 losses, may differ in their last bits (2 ulps of a loss near 9.6 seen: 1.9e-6); DDP sums as accumulation
    ulps = 1 if sharding == "ddp" else 8
    assert len(la) == 4 and np.allclose(la, lb, rtol=0, atol=max(1e-6, ulps * float(np.spacing(np.float32(max(la)))))), \
        (la, lb)
    ga = [r["grad_norm"] for r in metrics(one) if "grad_norm" in r]
    gb = [r["grad_norm"] for r in metrics(two) if "grad_norm" in r]
    # FSDP sums the squares of each rank's shard: fp32 norms of the (sharded) embedding gradient differ in the
    # 4th digit from the unsharded one (both are fp32 roundings of the float64 value)
    assert np.allclose(ga, gb, rtol=1e-5 if sharding == "ddp" else 1e-3, atol=0), (ga, gb)
    ea = [r["eval_mlm_loss"] for r in metrics(one) if "eval_mlm_loss" in r]
    eb = [r["eval_mlm_loss"] for r in metrics(two) if "eval_mlm_loss" in r]
    assert len(ea) == 2 and np.allclose(ea, eb, rtol=0, atol=1e-5), (ea, eb)
    if sharding == "fsdp":
        latest = ckpt.latest_valid_checkpoint(os.path.join(two, "checkpoints"))
        assert os.path.isdir(os.path.join(latest, "sharded"))
