"""sslfast finetune / evaluate: the fine-tuning loop on labelled tasks, from a checkpoint or from scratch."""
import json
import os
import random

import pytest
import torch

import sslfast.data as D
from sslfast.cli import main as cli_main
from sslfast.data.downstream import load_task
from sslfast.train.evaluate import evaluate
from sslfast.train.finetune import FinetuneConfig, finetune

FILLER = "the a movie film plot actor scene story music ending start camera light night day city".split()


def _texts(seed, n):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 6)
        words.insert(rng.randrange(7), "great" if label else "awful")
        rows.append((" ".join(words) + f" {i}", label))
    return rows


@pytest.fixture
def sentiment_csv(tmp_path):
    import csv
    path = tmp_path / "sentiment.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "label"])
        for text, label in _texts(0, 400):
            w.writerow([text, "positive" if label else "negative"])
    return str(path)


@pytest.fixture
def checkpoint(tmp_path, sentiment_csv):
    """A tiny 'pretrained' BERT (random weights, a tokenizer of the task's words) saved as a checkpoint."""
    from sslfast.models import BertConfig, BertForMaskedLM
    tokenizer = D.train_tokenizer([[t] for t, _ in _texts(1, 200)], "wordpiece", vocab_size=200, show_progress=False)
    torch.manual_seed(5)
    model = BertForMaskedLM(BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                       pad_token_id=D.special_tokens(tokenizer).pad))
    path = tmp_path / "pretrained"
    model.save_pretrained(path)
    D.save_tokenizer(tokenizer, path, model_max_length=64)
    return str(path), model


def _config(model, task, out, **kw):
    base = dict(model=model, task=task, out=out, max_length=32, global_batch_size=16, lr=2e-3, epochs=3,
                progress=False, plot=False, device="cpu")
    base.update(kw)
    return FinetuneConfig(**base)


def test_finetune_from_a_checkpoint_learns_keeps_the_best_and_writes_results(tmp_path, sentiment_csv, checkpoint):
    path, pretrained = checkpoint
    out = str(tmp_path / "run")
    result = finetune(_config(path, sentiment_csv, out, text_column="sentence", plot=True))
    # chance is 0.5; the best epoch by validation (a few dozen examples) is scored on the test split
    assert result["validation"]["accuracy"] >= 0.9 and result["test"]["accuracy"] >= 0.75, result
    assert set(result["test"]) == {"accuracy", "f1", "mcc"}
    for name in ("metrics.jsonl", "metrics.png", "results.json", "best/model.safetensors", "best/tokenizer.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    saved = json.load(open(os.path.join(out, "results.json")))
    assert saved["test"] == result["test"] and saved["best_step"] == json.load(open(f"{out}/best/best.json"))["step"]
    evals = [r for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if "eval_accuracy" in r]
    assert len(evals) == 3  # one per epoch
    # the best weights are what transformers loads, with the task's labels
    import transformers
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "best"))
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "best"))
    clf = transformers.pipeline("text-classification", model=hf, tokenizer=tokenizer)
    from sslfast.models import BertForSequenceClassification
    ours = BertForSequenceClassification.from_pretrained(os.path.join(out, "best"))
    for text in ("awful the movie plot", "a great film"):
        logits = ours(**tokenizer(text, return_tensors="pt")).logits[0]
        assert clf(text)[0]["label"] == ("positive" if logits[1] > logits[0] else "negative")


def test_a_roberta_checkpoint_finetunes_with_its_own_heads_and_tokenizer(tmp_path, sentiment_csv):
    """A RoBERTa checkpoint (byte-level BPE with <s> </s> <pad>) loads into RoBERTa's classifier: its encoder
    weights arrive, it learns the task, transformers reads the result."""
    from sslfast.models import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification
    tokenizer = D.train_tokenizer([[t] for t, _ in _texts(1, 200)], "roberta-bpe", vocab_size=400, show_progress=False)
    special = D.special_tokens(tokenizer)
    torch.manual_seed(5)
    pretrained = RobertaForMaskedLM(RobertaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64 + special.pad + 1, pad_token_id=special.pad,
        type_vocab_size=1))
    path = tmp_path / "roberta"
    pretrained.save_pretrained(path)
    D.save_tokenizer(tokenizer, path, model_max_length=64)
    out = str(tmp_path / "run")
    result = finetune(_config(str(path), sentiment_csv, out, text_column="sentence", max_length=48))
    assert result["validation"]["accuracy"] >= 0.9 and result["test"]["accuracy"] >= 0.75, result
    best = RobertaForSequenceClassification.from_pretrained(os.path.join(out, "best"))
    assert best.config.model_type == "roberta" and best.config.id2label == {0: "negative", 1: "positive"}
    import transformers
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(os.path.join(out, "best")).eval()
    assert type(hf).__name__ == "RobertaForSequenceClassification"
    enc = transformers.AutoTokenizer.from_pretrained(os.path.join(out, "best"))(["a great film", "awful plot"],
                                                                               padding=True, return_tensors="pt")
    torch.testing.assert_close(best(**enc).logits, hf(**enc).logits, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="max_position_embeddings 66 \\(less the 2 rows"):
        finetune(_config(str(path), sentiment_csv, None, text_column="sentence", max_length=66))


def test_the_checkpoint_weights_are_loaded_and_from_scratch_are_not(sentiment_csv, checkpoint):
    from sslfast.train.distributed import init_distributed
    from sslfast.train.tasks.finetune import FinetuneTask
    path, pretrained = checkpoint
    ctx = init_distributed("cpu")
    built = {}
    for scratch in (False, True):
        task = FinetuneTask(_config(path, sentiment_csv, None, text_column="sentence", from_scratch=scratch), ctx)
        task.prepare(None, None)
        built[scratch] = task.build_model()
    reference = pretrained.state_dict()
    encoder = [k for k in built[False].state_dict() if k.startswith("bert.encoder.")]
    assert len(encoder) > 10
    assert all(torch.equal(built[False].state_dict()[k], reference[k]) for k in encoder)
    assert not any(torch.equal(built[True].state_dict()[k], reference[k]) for k in encoder if k.endswith("weight")
                   and "LayerNorm" not in k)
    assert built[True].config.vocab_size == built[False].config.vocab_size  # the same config and tokenizer


def test_an_interrupted_run_resumes_exactly(tmp_path, sentiment_csv):
    import shutil
    options = dict(text_column="sentence", max_steps=12, save_every=6, eval_every=6, dropout=0.1)
    full = finetune(_config("scratch:tiny", sentiment_csv, str(tmp_path / "a"), **options))
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # as if killed after the checkpoint of step 6
    middle = str(tmp_path / "b" / "checkpoints" / "step-00000006")
    with pytest.warns(UserWarning, match="set aside"):
        resumed = finetune(_config("scratch:tiny", sentiment_csv, str(tmp_path / "b"), resume=middle, **options))
    assert resumed["steps"] == 12
    assert resumed["final_loss"] == full["final_loss"] and resumed["test"] == full["test"]
    assert resumed["best_step"] == full["best_step"]


def test_regression_and_token_classification(tmp_path):
    rows = _texts(2, 300)
    with open(tmp_path / "r.jsonl", "w") as f:
        for text, label in rows:
            f.write(json.dumps({"text": text, "label": 2.5 * label - 1.25 + 0.01}) + "\n")
    result = finetune(_config("scratch:tiny", str(tmp_path / "r.jsonl"), None, max_steps=60))
    assert result["kind"] == "regression" and result["test"]["pearson"] > 0.8, result
    lines = []
    for text, _ in rows:
        for word in text.split():
            lines.append(f"{word} {'SENT' if word in ('great', 'awful') else 'O'}")
        lines.append("")
    (tmp_path / "t.conll").write_text("\n".join(lines))
    tokens = finetune(_config("scratch:tiny", str(tmp_path / "t.conll"), None, max_steps=60))
    assert tokens["kind"] == "token-classification" and tokens["test"]["accuracy"] > 0.95, tokens


def test_evaluate_against_scratch_writes_a_table_json_and_plot(tmp_path, sentiment_csv, checkpoint):
    path, _ = checkpoint
    report = evaluate(path, [sentiment_csv], seeds=2, baseline="scratch", out=str(tmp_path / "eval"),
                      max_steps=8, max_length=32, global_batch_size=16, text_column="sentence")
    assert len(report["runs"]) == 4 and {r["weights"] for r in report["runs"]} == {"pretrained", "scratch"}
    name = os.path.basename(sentiment_csv)
    summary = report["summary"][name]
    accuracies = [r["test"]["accuracy"] for r in report["runs"] if r["weights"] == "scratch"]
    assert summary["scratch"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    for f in ("results.json", "results.md", "results.png"):
        assert os.path.isfile(tmp_path / "eval" / f)
    assert "| sentiment.csv | accuracy |" in open(tmp_path / "eval" / "results.md").read()


def test_the_evaluate_command_prints_its_table(tmp_path, sentiment_csv, capsys):
    out = str(tmp_path / "eval")
    assert cli_main(["evaluate", "--model", "scratch:tiny", "--tasks", sentiment_csv, "--seeds", "1", "--max-steps", "4",
                     "--max-length", "32", "--text-column", "sentence", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "| sentiment.csv | accuracy |" in printed and os.path.isfile(os.path.join(out, "results.json"))
    assert cli_main(["evaluate", "--model", "scratch:tiny", "--tasks", sentiment_csv, "--seeds", "0"]) == 2


def test_clear_errors(tmp_path, sentiment_csv, capsys):
    common = ["--task", sentiment_csv, "--text-column", "sentence", "--no-progress"]
    assert cli_main(["finetune", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "w"), *common]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli_main(["finetune", "--model", "scratch:huge", "--out", str(tmp_path / "x"), *common]) == 2
    assert "size must be one of" in capsys.readouterr().err
    assert cli_main(["finetune", "--model", "scratch:tiny", "--task", sentiment_csv, "--text-column", "body",
                     "--out", str(tmp_path / "y")]) == 2
    assert "no column 'body'" in capsys.readouterr().err
    task = load_task(sentiment_csv, text_column="sentence")
    task["train"].labels[0] = 7  # a label the head does not have
    with pytest.raises(Exception, match="outside the head"):
        finetune(_config("scratch:tiny", "given", None), data=task)


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one_process_accumulating(tmp_path, sentiment_csv, checkpoint):
    """Dropout off, no clipping: 2 gloo processes with one micro-batch each == 1 process accumulating both."""
    import subprocess
    import sys

    from safetensors.torch import load_file
    args = ["finetune", "--model", checkpoint[0], "--task", sentiment_csv, "--text-column", "sentence",
            "--max-length", "32", "--global-batch-size", "16", "--micro-batch-size", "8", "--max-steps", "4",
            "--dropout", "0", "--max-grad-norm", "0", "--eval-every", "2", "--save-every", "2", "--lr", "2e-3",
            "--no-progress", "--no-plot", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default per process: the same BLAS blocking
    runs = {}
    for name, launcher in (("one", [sys.executable, "-m", "sslfast"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node=2", "-m", "sslfast"])):
        out = str(tmp_path / name)
        proc = subprocess.run(launcher + args + ["--out", out], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        log = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        runs[name] = ([r["loss"] for r in log if "loss" in r], [r["eval_accuracy"] for r in log if "eval_accuracy" in r],
                      load_file(os.path.join(out, "final", "model.safetensors")))
    (la, ea, wa), (lb, eb, wb) = runs["one"], runs["two"]
    assert len(la) == 4 and len(ea) == 2
    assert max(abs(a - b) for a, b in zip(la, lb)) < 1e-6 and ea == eb, (la, lb, ea, eb)
    assert wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6
