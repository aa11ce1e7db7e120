"""What the text tasks share: the corpus, the run's tokenizer, the tokenized cache (built once, on rank 0)."""
from __future__ import annotations

import os

import sslfast.data as D
from sslfast.data.news import news_corpus
from sslfast.train.config import ConfigError, read_mapping

__all__ = ["load_text_corpus", "prepare_tokenizer", "tokenized_corpus", "text_model_config"]


def load_text_corpus(data: str, text_column: str = "text") -> D.Corpus:
    """``--data``: the embedded corpus, the news articles, or the user's files."""
    if data == "default":
        return D.default_corpus()
    if data == "news":
        return news_corpus()
    return D.load_corpus(data, text_field=text_column)


def prepare_tokenizer(config, ctx, out_dir: str, kind: str, resume_path=None):
    """The run's tokenizer: loaded from ``--tokenizer PATH``, or trained on rank 0 and saved under
    ``<out>/tokenizer`` (a run resumed from a checkpoint of another folder takes that run's tokenizer)."""
    if config.tokenizer != "train":
        return D.load_tokenizer(config.tokenizer), None
    if out_dir is None:  # a run in memory: the tokenizer is not saved
        corpus = load_text_corpus(config.data, config.text_column)
        return D.train_tokenizer(corpus, kind, vocab_size=config.vocab_size), corpus
    saved = os.path.join(out_dir, "tokenizer")
    corpus = None
    if ctx.is_main and not os.path.isfile(os.path.join(saved, "tokenizer.json")):
        source_run = os.path.dirname(os.path.dirname(resume_path)) if resume_path else None
        if source_run and os.path.isfile(os.path.join(source_run, "tokenizer", "tokenizer.json")):
            D.save_tokenizer(D.load_tokenizer(os.path.join(source_run, "tokenizer")), saved,
                             model_max_length=config.max_length)
        else:
            corpus = load_text_corpus(config.data, config.text_column)
            D.save_tokenizer(D.train_tokenizer(corpus, kind, vocab_size=config.vocab_size), saved,
                             model_max_length=config.max_length)
    ctx.barrier()
    return D.load_tokenizer(saved), corpus


def tokenized_corpus(config, ctx, tokenizer, corpus=None) -> D.TokenizedCorpus:
    """The run's corpus tokenized into the cache: built on rank 0, opened by the other ranks."""
    tokenized = None
    if ctx.is_main:
        corpus = corpus if corpus is not None else load_text_corpus(config.data, config.text_column)
        tokenized = D.TokenizedCorpus.build(corpus, tokenizer, progress=config.progress)
    path = ctx.broadcast_object(tokenized.directory if tokenized is not None else None)
    return tokenized or D.TokenizedCorpus.open(path)


def text_model_config(config, vocab_size: int, family, default):
    """The model config of a text run of ``family`` (its record): read from ``--model-config`` (which must
    describe the family's ``model_type``) or ``default()`` (from ``--size``), then checked against the
    tokenizer's vocabulary and ``--max-length`` (the position rows that many tokens need)."""
    if config.model_config:
        values = read_mapping(config.model_config)
        if values.get("model_type", family.model_type) != family.model_type:
            raise ConfigError(f"{config.model_config} describes a {values['model_type']!r} model, not "
                              f"{family.display_name}")
        model_config = family.config_class.from_dict(values)
    else:
        model_config = default()
    if model_config.vocab_size != vocab_size:
        raise ConfigError(f"the tokenizer has {vocab_size} tokens but the model's vocab_size is "
                          f"{model_config.vocab_size}: pass a matching --tokenizer or model config")
    positions = getattr(model_config, family.positions_field)
    if positions < family.position_rows(model_config, config.max_length):
        raise ConfigError(f"--max-length {config.max_length} exceeds the model's {family.positions_field} "
                          f"{positions}" + ("" if family.position_rows(model_config, 0) == 0 else
                                            f" (less the {family.position_rows(model_config, 0)} rows before the "
                                            f"first position)"))
    return model_config
