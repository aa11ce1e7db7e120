"""GPT-2 pretraining: next-token prediction on documents packed into fixed rows (``cu_seqlens`` keeps attention
and positions inside each document)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

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

__all__ = ["GPT2Task"]


class GPT2Task(Task):
    name = "gpt2"

    def prepare(self, out_dir: str, resume_path) -> None:
        cfg, ctx = self.config, self.ctx
        if cfg.data in ("digits", "mnist", "fashion-mnist"):
            raise ConfigError(f"--data {cfg.data} is image data; GPT-2 needs text (default, news, or a text file)")
        self.tokenizer, corpus = prepare_tokenizer(cfg, ctx, out_dir, "bpe", resume_path)
        self.special = D.special_tokens(self.tokenizer)
        self.special.require("eos", purpose="GPT-2 pretraining")
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.model_config = self._model_config()
        tokenized = tokenized_corpus(cfg, ctx, self.tokenizer, corpus)
        train_docs, eval_docs = tokenized.split_documents(cfg.eval_fraction, seed=cfg.seed)
        self.train_dataset = D.CausalLMDataset(tokenized, seq_len=cfg.max_length, special=self.special,
                                               packed=not self.foreign_model, documents=train_docs)
        try:
            self.eval_dataset = D.CausalLMDataset(tokenized, seq_len=cfg.max_length, special=self.special,
                                                  packed=not self.foreign_model, documents=eval_docs) \
                if len(eval_docs) else None
        except D.CorpusError:  # a held-out split shorter than one row
            self.eval_dataset = None
        self.collate = D.CausalLMCollator(self.special)
        self.fingerprint = {"corpus_sha256": tokenized.meta["corpus_sha256"],
                            "tokenizer_sha256": tokenized.meta["tokenizer_sha256"],
                            "model_config": dataclasses.asdict(self.model_config)}

    def _model_config(self):
        cfg, fam = self.config, family(self.config.model)
        config = text_model_config(cfg, self.vocab_size, fam,
                                   lambda: fam.build_config(fam.sizes[cfg.size], self.vocab_size, cfg.max_length,
                                                            self.special))
        config.bos_token_id = config.eos_token_id = config.pad_token_id = self.special.eos
        if cfg.dropout is not None:
            config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = cfg.dropout
        return config

    def build_model(self):
        return family(self.config.model).objectives[self.config.objective](self.model_config)

    def layers(self, model):
        return list(unwrap(model).transformer.h)

    def counts(self, batch):
        tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
        # the first token of every document piece is -100: the rest are the positions the loss predicts
        return {"tokens": tokens, "labelled": int((batch["labels"] != IGNORE_INDEX).sum())}

    @staticmethod
    def _model_inputs(batch: dict) -> dict:
        """Packed rows → one packed sequence per document piece (the model restarts positions itself)."""
        if "cu_seqlens" not in batch:
            return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
        return {"input_ids": batch["input_ids"].reshape(1, -1), "labels": batch["labels"].reshape(1, -1),
                "cu_seqlens": batch["cu_seqlens"], "max_seqlen": batch["max_seqlen"]}

    def loss(self, model, batch, totals, world_size):
        inputs = self._model_inputs(batch)
        if self.foreign_model:
            return model(**inputs).loss / totals["micro_batches"]
        return model(**inputs, num_items_in_batch=max(totals["labelled"], 1.0) / world_size).loss

    @torch.no_grad()
    def evaluate(self, model, batches):
        """Next-token loss and perplexity over the held-out batches, summed over ranks."""
        model = unwrap(model)
        sums = torch.zeros(2, dtype=torch.float64)  # loss sum, predicted tokens
        for batch in batches:
            weight = batch.get("eval_weight", 1.0)
            batch = {k: v.to(self.ctx.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                     if k != "eval_weight"}
            labels = batch["labels"]  # packed rows mask each piece's first token; padded rows do not
            counted = labels[..., 1:] if self.foreign_model else labels
            count = int((counted != IGNORE_INDEX).sum())
            if count == 0:
                continue
            inputs = self._model_inputs(batch)
            if self.foreign_model:
                loss_sum = model(**inputs).loss.double() * count
            else:
                loss_sum = model(**inputs, num_items_in_batch=1, return_logits=False).loss.double()
            sums[0] += weight * loss_sum.cpu()
            sums[1] += weight * count
        sums = self.ctx.all_reduce_sum(sums)
        if sums[1] == 0:
            return {}
        loss = float(sums[0] / sums[1])
        return {"eval_loss": loss, "eval_perplexity": float(torch.tensor(loss).exp())}

    def save_final(self, model, directory):
        unwrap(model).save_pretrained(directory)
        D.save_tokenizer(self.tokenizer, directory, model_max_length=self.config.max_length)

    def flops_per_token(self, model) -> Optional[float]:
        """6 × the blocks' matmul parameters + the attention scores (12·L·D·S), per trained token."""
        c = self.model_config
        inner = c.n_inner or 4 * c.n_embd
        params = c.n_layer * (4 * c.n_embd ** 2 + 2 * c.n_embd * inner) + c.n_embd * c.vocab_size
        return 6 * params + 12 * c.n_layer * c.n_embd * self.config.max_length
