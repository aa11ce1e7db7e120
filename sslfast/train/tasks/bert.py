"""Masked-LM pretraining of the BERT family (BERT, RoBERTa): masked-LM, alone or with next-sentence /
sentence-order prediction where the family has it, on packed batches."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

import sslfast.data as D
from sslfast.constants import IGNORE_INDEX
from sslfast.models.families import family
from sslfast.train.config import ConfigError
from sslfast.train.tasks.base import Task, unwrap
from sslfast.train.tasks.text import (
    prepare_tokenizer,
    text_model_config,
    tokenized_corpus,
)

__all__ = ["MaskedLMTask", "BertTask"]


class MaskedLMTask(Task):
    """The ``masked-lm`` task of a family record (:mod:`sslfast.models.families`): its tokenizer kind, sizes,
    config and model classes."""
    name = "masked-lm"

    @property
    def family(self):
        return family(self.config.model)

    def prepare(self, out_dir: str, resume_path) -> None:
        cfg, ctx, fam = self.config, self.ctx, self.family
        if cfg.data in ("digits", "mnist", "fashion-mnist"):
            raise ConfigError(f"--data {cfg.data} is image data; {fam.display_name} needs text (default, news, or "
                              f"a text file)")
        self.tokenizer, corpus = prepare_tokenizer(cfg, ctx, out_dir, fam.tokenizer_kind, resume_path)
        self.special = D.special_tokens(self.tokenizer)
        self.special.require("cls", "sep", "mask", "pad", purpose=f"{fam.display_name} pretraining")
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.model_config = self._model_config()
        tokenized = tokenized_corpus(cfg, ctx, self.tokenizer, corpus)
        train_docs, eval_docs = tokenized.split_documents(cfg.eval_fraction, seed=cfg.seed)
        self.train_dataset = self._dataset(tokenized, train_docs)
        self.eval_dataset = self._dataset(tokenized, eval_docs) if len(eval_docs) else None
        whole_word = D.continuation_table(self.tokenizer) if cfg.whole_word_mask else None
        self.collate = D.MLMCollator(self.special, self.vocab_size, mlm_probability=cfg.mlm_probability,
                                     whole_word=whole_word, packed=not self.foreign_model)
        self.fingerprint = {"corpus_sha256": tokenized.meta["corpus_sha256"],
                            "tokenizer_sha256": tokenized.meta["tokenizer_sha256"],
                            "model_config": dataclasses.asdict(self.model_config)}

    def _dataset(self, tokenized, documents):
        cfg = self.config
        try:
            if cfg.objective == "mlm":
                return D.MaskedLMDataset(tokenized, max_length=cfg.max_length, special=self.special,
                                         documents=documents)
            return D.SentencePairDataset(tokenized, max_length=cfg.max_length, special=self.special,
                                         objective=cfg.objective.split("+")[1], seed=cfg.seed, documents=documents)
        except D.CorpusError:
            if documents is not None and len(documents) < tokenized.num_documents // 2:  # the held-out split
                return None
            raise

    def _model_config(self):
        cfg, fam = self.config, self.family
        config = text_model_config(cfg, self.vocab_size, fam,
                                   lambda: fam.build_config(fam.sizes[cfg.size], self.vocab_size, cfg.max_length,
                                                            self.special))
        config.pad_token_id = self.special.pad
        if cfg.dropout is not None:
            config.hidden_dropout_prob = config.attention_probs_dropout_prob = cfg.dropout
        return config

    def build_model(self):
        return self.family.objectives[self.config.objective](self.model_config)

    def layers(self, model):
        return list(unwrap(model).base_model.encoder.layer)

    def counts(self, batch):
        tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
        counts = {"tokens": tokens, "labelled": int((batch["labels"] != IGNORE_INDEX).sum())}
        if "next_sentence_label" in batch:
            counts["sequences"] = int(batch["next_sentence_label"].numel())
        return counts

    def loss(self, model, batch, totals, world_size):
        if self.foreign_model:  # transformers' classes average per micro-batch
            return model(**batch).loss / totals["micro_batches"]
        kwargs = {"num_items_in_batch": max(totals["labelled"], 1.0) / world_size}
        if "next_sentence_label" in batch:
            kwargs["num_sequences_in_batch"] = totals["sequences"] / world_size
        return model(**batch, **kwargs).loss

    @torch.no_grad()
    def evaluate(self, model, batches):
        """MLM loss, accuracy and perplexity over the held-out batches (and NSP/SOP accuracy), summed over
        ranks. sslfast's BERT runs its head on the labelled rows only; another model's logits are used."""
        model = unwrap(model)
        sums = torch.zeros(5, dtype=torch.float64)  # mlm loss sum, mlm correct, labelled, pair correct, pairs
        for batch in batches:
            weight = batch.get("eval_weight", 1.0)
            batch = {k: v.to(self.ctx.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                     if k != "eval_weight"}
            logits, labels, pair = self._eval_logits(model, batch)  # (M, V), (M,), (B, 2) or None
            sums[0] += weight * F.cross_entropy(logits, labels, reduction="sum").double().cpu()
            sums[1] += weight * (logits.argmax(-1) == labels).sum().cpu()
            sums[2] += weight * labels.numel()
            if pair is not None and "next_sentence_label" in batch:
                sums[3] += weight * (pair.argmax(-1) == batch["next_sentence_label"]).sum().cpu()
                sums[4] += weight * batch["next_sentence_label"].numel()
        sums = self.ctx.all_reduce_sum(sums)
        if sums[2] == 0:
            return {}
        mlm_loss = float(sums[0] / sums[2])
        out = {"eval_mlm_loss": mlm_loss, "eval_mlm_accuracy": float(sums[1] / sums[2]),
               "eval_mlm_perplexity": float(torch.tensor(mlm_loss).exp())}
        if sums[4]:
            out[f"eval_{self.config.objective.split('+')[1]}_accuracy"] = float(sums[3] / sums[4])
        return out

    def _eval_logits(self, model, batch):
        """(logits of the labelled tokens fp32, their labels, pair logits or None)."""
        if self.foreign_model:
            out = model(**{k: v for k, v in batch.items() if k not in ("labels", "next_sentence_label")})
            keep = batch["labels"] != IGNORE_INDEX
            logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            return logits[keep].float(), batch["labels"][keep], getattr(out, "seq_relationship_logits", None)
        packed, layout, _ = model.base_model.encode(input_ids=batch["input_ids"],
                                                    token_type_ids=batch["token_type_ids"],
                                                    cu_seqlens=batch["cu_seqlens"], max_seqlen=batch["max_seqlen"])
        labels = layout.pack(batch["labels"])
        keep = labels != IGNORE_INDEX
        logits = model.mlm_head(packed[keep]).float()  # the head on the labelled rows only
        pair_head = getattr(getattr(model, "cls", None), "seq_relationship", None)
        pair = pair_head(model.base_model.pool(packed, layout)) if pair_head is not None else None
        return logits, labels[keep], pair

    def save_final(self, model, directory):
        unwrap(model).save_pretrained(directory)
        D.save_tokenizer(self.tokenizer, directory, model_max_length=self.config.max_length)

    def flops_per_token(self, model) -> Optional[float]:
        """6 × the encoder's matmul parameters + the attention scores (12·L·H·S), per trained token."""
        c = self.model_config
        params = c.num_hidden_layers * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size)
        return 6 * params + 12 * c.num_hidden_layers * c.hidden_size * self.config.max_length


BertTask = MaskedLMTask  # the name fine-tuning and older code use
