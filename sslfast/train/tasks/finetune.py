"""Fine-tuning on a labelled downstream task (:mod:`sslfast.data.downstream`) in the pretraining loop: a
classification, regression or token-classification head on a pretrained (or freshly initialised) encoder."""
from __future__ import annotations

import copy
import json
import os
import shutil
from typing import Optional

import torch

import sslfast.data as D
from sslfast.data.downstream import load_task
from sslfast.models import BertConfig
from sslfast.models._common.hub import CheckpointError, load_config, read_state_dict
from sslfast.models.bert.family import BERT, BERT_SIZES
from sslfast.models.families import family_for_model_type
from sslfast.train.config import ConfigError
from sslfast.train.scores import task_scores
from sslfast.train.tasks.base import unwrap
from sslfast.train.tasks.bert import BertTask

__all__ = ["FinetuneTask", "resolve_checkpoint"]


def resolve_checkpoint(path: str) -> str:
    """The model directory of ``path``: itself (config.json inside), or a pretraining run's ``final/``."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    final = os.path.join(path, "final")
    if os.path.isfile(os.path.join(final, "config.json")):
        return final
    if not os.path.exists(path):
        raise CheckpointError(f"--model {path!r}: no such directory (give a checkpoint folder, a pretraining run "
                              f"folder with final/, or scratch:<size>)")
    raise CheckpointError(f"--model {path!r} holds no config.json (nor final/config.json): not a checkpoint folder")


class _Examples(torch.utils.data.Dataset):
    """Tokenized examples of one split: input ids, token types, label(s)."""

    def __init__(self, tokenizer, split, kind: str, max_length: int):
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.kind = kind
        if kind == "token-classification":
            encodings = tokenizer.encode_batch(split.texts, is_pretokenized=True)
            self.labels = []
            for enc, word_labels in zip(encodings, split.labels):
                seen, labels = set(), []
                for word in enc.word_ids:  # the first piece of each word carries its label
                    labels.append(D.IGNORE_INDEX if word is None or word in seen else word_labels[word])
                    if word is not None:
                        seen.add(word)
                self.labels.append(labels)
        else:
            inputs = split.texts if split.text_pairs is None else list(zip(split.texts, split.text_pairs))
            encodings = tokenizer.encode_batch(inputs)
            self.labels = list(split.labels)
        self.input_ids = [e.ids for e in encodings]
        self.token_type_ids = [e.type_ids for e in encodings]

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, i):
        return {"input_ids": self.input_ids[i], "token_type_ids": self.token_type_ids[i], "labels": self.labels[i]}

    def lengths(self):
        return torch.tensor([len(ids) for ids in self.input_ids], dtype=torch.float64)


class _Collate:
    """Pads a list of examples into (B, S) tensors with an attention mask; labels as the head needs them."""

    def __init__(self, pad_id: int, kind: str):
        self.pad_id, self.kind = pad_id, kind

    def __call__(self, examples, seeds=None):
        width = max(len(e["input_ids"]) for e in examples)

        def pad(rows, value, dtype=torch.long):
            out = torch.full((len(rows), width), value, dtype=dtype)
            for i, row in enumerate(rows):
                out[i, :len(row)] = torch.as_tensor(row, dtype=dtype)
            return out
        batch = {"input_ids": pad([e["input_ids"] for e in examples], self.pad_id),
                 "token_type_ids": pad([e["token_type_ids"] for e in examples], 0),
                 "attention_mask": pad([[1] * len(e["input_ids"]) for e in examples], 0)}
        if self.kind == "token-classification":
            batch["labels"] = pad([e["labels"] for e in examples], D.IGNORE_INDEX)
        elif self.kind == "regression":
            batch["labels"] = torch.tensor([float(e["labels"]) for e in examples], dtype=torch.float32)
        else:
            batch["labels"] = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
        return batch


class FinetuneTask(BertTask):
    """``config`` is a :class:`~sslfast.train.finetune.FinetuneConfig`. A model of the BERT family (BERT,
    RoBERTa) with a task head: the encoder's layers, FLOP count and final save are the masked-LM task's; the
    data, loss and evaluation are the task's."""
    name = "finetune"
    _family = BERT  # the checkpoint's family, set by prepare()

    @property
    def family(self):
        return self._family

    def prepare(self, out_dir: Optional[str], resume_path) -> None:
        cfg = self.config
        self.task = self.given_data if self.given_data is not None else load_task(
            cfg.task, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column, label_column=cfg.label_column)
        task = self.task
        self.tokenizer, self.model_config, self.source = self._model_source(task)
        if self.family.task != "masked-lm":
            raise ConfigError(f"--model: fine-tuning supports BERT-family checkpoints (model_type 'bert' or "
                              f"'roberta'); this one is {self.model_config.model_type!r}")
        special = D.special_tokens(self.tokenizer)
        special.require("cls", "sep", "pad", purpose="fine-tuning")
        length = cfg.max_length
        limit = getattr(self.model_config, "max_position_embeddings", None)
        if limit is not None and self.family.position_rows(self.model_config, length) > limit:
            raise ConfigError(f"--max-length {length} exceeds the model's max_position_embeddings {limit}"
                              + ("" if self.family.position_rows(self.model_config, 0) == 0 else
                                 f" (less the {self.family.position_rows(self.model_config, 0)} rows before the "
                                 f"first position)"))
        train = task["train"].subset(cfg.max_train_examples)
        self.train_dataset = _Examples(self.tokenizer, train, task.kind, length)
        self.eval_dataset = _Examples(self.tokenizer, task["validation"].subset(cfg.max_eval_examples), task.kind, length)
        self.test_dataset = _Examples(self.tokenizer, task["test"].subset(cfg.max_eval_examples), task.kind, length)
        if task.kind != "regression":
            top = max(max(y) if isinstance(y, list) else y for y in task["train"].labels)
            if top >= task.num_labels:
                raise ConfigError(f"label id {top} is outside the head's {task.num_labels} classes")
        self.collate = _Collate(special.pad, task.kind)
        steps_per_epoch = -(-len(self.train_dataset) // cfg.global_batch_size)
        if cfg.max_steps is None and cfg.max_tokens is None:
            cfg.max_steps = max(1, round(cfg.epochs * steps_per_epoch))
        if cfg.eval_every is None:
            cfg.eval_every = steps_per_epoch
        if cfg.save_every is None:
            cfg.save_every = steps_per_epoch
        self.fingerprint = {"task": task.name, "train_examples": len(self.train_dataset), "source": self.source,
                            "eval_examples": len(self.eval_dataset),
                            "num_labels": task.num_labels, "kind": task.kind}
        self.best = self._read_best(out_dir)

    def _model_source(self, task):
        """(tokenizer, config with the task's head, description) from --model."""
        cfg = self.config
        head = {"num_labels": task.num_labels,
                "problem_type": "regression" if task.kind == "regression" else
                ("single_label_classification" if task.kind == "classification" else None)}
        if task.label_names is not None:
            head["id2label"] = dict(enumerate(task.label_names))
            head["label2id"] = {n: i for i, n in enumerate(task.label_names)}
        if cfg.model.startswith("scratch:"):
            size = cfg.model.split(":", 1)[1]
            if size not in BERT_SIZES:
                raise ConfigError(f"--model scratch:<size>: size must be one of {list(BERT_SIZES)}, got {size!r}")
            if cfg.tokenizer == "train":  # a WordPiece vocabulary of the task's own training texts
                texts = task["train"].texts
                documents = [[" ".join(t) if isinstance(t, list) else t] for t in texts]
                if task["train"].text_pairs is not None:
                    documents += [[t] for t in task["train"].text_pairs]
                tokenizer = D.train_tokenizer(documents, "wordpiece", vocab_size=cfg.vocab_size, show_progress=False)
            else:
                tokenizer = D.load_tokenizer(cfg.tokenizer)
            config = BertConfig(vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                                max_position_embeddings=max(512, cfg.max_length), **BERT_SIZES[size])
            config.pad_token_id = D.special_tokens(tokenizer).pad
            source = f"scratch:{size}"
        else:
            directory = resolve_checkpoint(cfg.model)
            with open(os.path.join(directory, "config.json")) as f:
                model_type = json.load(f).get("model_type")
            try:
                self._family = family_for_model_type(model_type)
            except ValueError:
                raise ConfigError(f"--model: fine-tuning supports BERT-family checkpoints (model_type 'bert' or "
                                  f"'roberta'); {directory} holds {model_type!r}") from None
            config = load_config(directory, self._family.config_class)
            tokenizer_dir = directory if cfg.tokenizer == "train" else cfg.tokenizer
            try:
                tokenizer = D.load_tokenizer(tokenizer_dir)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"--model {cfg.model!r}: no usable tokenizer.json in {tokenizer_dir} ({exc}); "
                                      f"pass --tokenizer") from None
            if tokenizer.get_vocab_size(with_added_tokens=True) > config.vocab_size:
                raise CheckpointError(f"the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} "
                                      f"tokens, the model's embedding {config.vocab_size}: they do not belong together")
            self.directory = directory
            source = ("scratch from " if cfg.from_scratch else "") + os.path.abspath(directory)
        for k, v in head.items():
            setattr(config, k, v)
        if cfg.dropout is not None:
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
        return tokenizer, config, source

    def build_model(self):
        head = "TokenClassification" if self.task.kind == "token-classification" else "SequenceClassification"
        cls = self.family.auto_classes[f"AutoModelFor{head}"]
        if self.config.model.startswith("scratch:") or self.config.from_scratch:
            return cls(copy.deepcopy(self.model_config))
        import warnings
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(newly initiali[sz]ed|not used|unused|fit no parameter).*")
            model = cls.from_pretrained(self.directory, config=copy.deepcopy(self.model_config))
        return model

    def counts(self, batch):
        return {"tokens": int(batch["attention_mask"].sum()), "sequences": int(batch["input_ids"].shape[0])}

    def loss(self, model, batch, totals, world_size):
        # the head's mean over this micro-batch, weighted by its share of the global batch's sequences
        share = batch["input_ids"].shape[0] * world_size / max(totals["sequences"], 1.0)
        return model(**batch).loss * share

    def eval_batches(self, micro_batch: int) -> list[dict]:
        """This rank's share of the whole validation split."""
        return self._batches(self.eval_dataset, micro_batch)

    def _batches(self, dataset, micro_batch):
        rank, world = self.ctx.rank, self.ctx.world_size
        mine = list(range(rank, len(dataset), world))
        return [self.collate([dataset[i] for i in mine[k:k + micro_batch]]) for k in range(0, len(mine), micro_batch)]

    @torch.no_grad()
    def predict(self, model, batches) -> tuple[list, list]:
        """(predictions, labels) over ``batches``: class ids, floats, or word labels (flattened)."""
        model = unwrap(model)
        was_training = model.training
        model.eval()
        predictions, labels = [], []
        for batch in batches:
            inputs = {k: v.to(self.ctx.device) for k, v in batch.items() if k != "labels"}
            logits = model(**inputs).logits.float().cpu()
            if self.task.kind == "regression":
                predictions += logits.view(-1).tolist()
                labels += batch["labels"].view(-1).tolist()
            else:
                predictions += logits.argmax(-1).view(-1).tolist()
                labels += batch["labels"].view(-1).tolist()
        model.train(was_training)
        if self.ctx.world_size > 1:
            import torch.distributed as dist
            gathered = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, (predictions, labels))
            predictions = [p for part in gathered for p in part[0]]
            labels = [y for part in gathered for y in part[1]]
        return predictions, labels

    def scores(self, model, dataset) -> dict:
        predictions, labels = self.predict(model, self._batches(dataset, max(32, self.config.global_batch_size)))
        return task_scores(self.task.kind, predictions, labels, self.task.num_labels)

    def evaluate(self, model, batches):
        predictions, labels = self.predict(model, batches)
        scores = task_scores(self.task.kind, predictions, labels, self.task.num_labels)
        return {f"eval_{k}": v for k, v in scores.items()}

    # --- the best checkpoint ---
    def _read_best(self, out_dir):
        path = None if out_dir is None else os.path.join(out_dir, "best", "best.json")
        if path and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        return None

    def after_evaluation(self, model, metrics: dict, step: int, out_dir: Optional[str]) -> None:
        """Keep the weights with the best validation score (on disk under ``best/`` when there is a run
        folder, else in memory)."""
        key = f"eval_{self.task.metric}"
        if key not in metrics:
            return
        stale = self.best is not None and self.best["step"] > step  # a run resumed from an older checkpoint
        if self.best is not None and not stale and metrics[key] <= self.best["score"]:
            return
        self.best = {"step": step, "metric": self.task.metric, "score": metrics[key]}
        if out_dir is None:
            self.best_state = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}
        elif self.ctx.is_main:
            final = os.path.join(out_dir, "best")
            staging = final + ".tmp"
            shutil.rmtree(staging, ignore_errors=True)
            self.save_final(model, staging)
            with open(os.path.join(staging, "best.json"), "w") as f:
                json.dump(self.best, f)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)

    def best_model(self, model, out_dir):
        """``model`` with the best weights loaded back."""
        state = getattr(self, "best_state", None)
        if state is None and out_dir is not None and os.path.isdir(os.path.join(out_dir, "best")):
            state = read_state_dict(os.path.join(out_dir, "best"))
        if state is not None:
            unwrap(model).load_state_dict(state, strict=False)
        return model

