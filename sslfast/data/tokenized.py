"""A corpus tokenized once into memory-mapped shards, cached by (corpus hash, tokenizer hash).

Layout of a cache entry (one folder, written to a temporary name and renamed when complete)::

    meta.json                   counts, dtype, hashes, shard list
    tokens-00000.npy ...        token ids, uint16 (vocabularies up to 65536) or uint32; documents never
                                straddle two shards
    sentence_offsets.npy        (num_sentences + 1,) int64: global token offset where each sentence starts
    document_offsets.npy        (num_documents + 1,) int64: index of each document's first sentence

Special tokens are not stored: the objectives add ``[CLS]``/``[SEP]``/``<|endoftext|>`` themselves.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import numpy as np

from sslfast._cache import cache_root
from sslfast.data.corpus import Corpus
from sslfast.data.tokenizer import load_tokenizer, tokenizer_sha256

__all__ = ["TokenizedCorpus"]

_FORMAT_VERSION = 1


def _token_dtype(vocab_size: int):
    """uint16 when every id (``< vocab_size``) fits, else uint32."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def _id_bound(tokenizer) -> int:
    """One past the largest token id (ids may be sparse, so not always the vocabulary size)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max(max(vocab.values()) + 1, len(vocab)) if vocab else 0


class TokenizedCorpus:
    """Token ids of every sentence of a corpus, memory-mapped: ``tokens(start, end)`` reads a global
    token range, ``document_span(d)`` gives a document's token range, ``sentence_offsets`` and
    ``document_offsets`` hold the boundaries."""

    def __init__(self, shards, sentence_offsets, document_offsets, meta: dict, directory: Optional[str] = None):
        self._shards = list(shards)
        self.sentence_offsets = sentence_offsets  # (num_sentences + 1,) int64 token offsets
        self.document_offsets = document_offsets  # (num_documents + 1,) int64 sentence offsets
        self.meta = meta
        self.directory = directory
        self._shard_starts = np.cumsum([0] + [len(s) for s in self._shards])  # (shards + 1,)
        if (self._shard_starts[-1] != meta["num_tokens"]
                or len(sentence_offsets) != meta["num_sentences"] + 1
                or len(document_offsets) != meta["num_documents"] + 1
                or int(sentence_offsets[-1]) != meta["num_tokens"]):
            raise ValueError(f"{directory or 'tokenized corpus'}: shard sizes and offsets disagree with its "
                             f"metadata (damaged cache)")

    @classmethod
    def open(cls, directory: str | os.PathLike) -> "TokenizedCorpus":
        """Memory-map a cache entry written by :meth:`build`."""
        directory = os.fspath(directory)
        try:
            with open(os.path.join(directory, "meta.json")) as f:
                meta = json.load(f)
            if meta.get("format") != _FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')} (expected {_FORMAT_VERSION})")
            shards = [np.load(os.path.join(directory, s["file"]), mmap_mode="r") for s in meta["shards"]]
            sentence_offsets = np.load(os.path.join(directory, "sentence_offsets.npy"), mmap_mode="r")
            document_offsets = np.load(os.path.join(directory, "document_offsets.npy"), mmap_mode="r")
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{directory} is not a complete tokenized corpus: {err}") from None
        return cls(shards, sentence_offsets, document_offsets, meta, directory)

    @classmethod
    def encode(cls, corpus, tokenizer, *, batch_sentences: int = 8192, progress: bool = False) -> "TokenizedCorpus":
        """Tokenize ``corpus`` into memory (no cache): for small corpora and tests."""
        corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        tokenizer = load_tokenizer(tokenizer)
        vocab_size = _id_bound(tokenizer)
        tokens, lengths = _encode(corpus, tokenizer, _token_dtype(vocab_size), batch_sentences, progress)
        sentence_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        document_offsets = np.concatenate([[0], np.cumsum([len(d) for d in corpus])]).astype(np.int64)
        meta = _meta(corpus, tokenizer, vocab_size, sentence_offsets, [])
        return cls([np.concatenate(tokens) if tokens else np.zeros(0, _token_dtype(vocab_size))],
                   sentence_offsets, document_offsets, meta)

    # --- sizes ---
    @property
    def num_tokens(self) -> int:
        return int(self.meta["num_tokens"])

    @property
    def num_sentences(self) -> int:
        return int(self.meta["num_sentences"])

    @property
    def num_documents(self) -> int:
        return int(self.meta["num_documents"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def __len__(self) -> int:
        return self.num_documents

    def __repr__(self) -> str:
        where = f" in {self.directory}" if self.directory else " in memory"
        return (f"TokenizedCorpus({self.meta['corpus_name']!r}: {self.num_documents} documents, "
                f"{self.num_sentences} sentences, {self.num_tokens} tokens, {self.meta['dtype']}, "
                f"{len(self._shards)} shard(s){where})")

    # --- access ---
    def tokens(self, start: int, end: int) -> np.ndarray:
        """Token ids ``[start, end)`` of the concatenated corpus (a range inside one document)."""
        if end <= start:
            return self._shards[0][:0]
        shard = int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        base = int(self._shard_starts[shard])
        if end > self._shard_starts[shard + 1]:
            raise IndexError(f"token range [{start}, {end}) crosses a shard boundary")
        return self._shards[shard][start - base:end - base]

    def document_sentences(self, d: int) -> tuple[int, int]:
        """Index of the first sentence of document ``d`` and one past its last."""
        return int(self.document_offsets[d]), int(self.document_offsets[d + 1])

    def document_span(self, d: int) -> tuple[int, int]:
        """Global token range of document ``d``."""
        first, last = self.document_sentences(d)
        return int(self.sentence_offsets[first]), int(self.sentence_offsets[last])

    def document_tokens(self, d: int) -> np.ndarray:
        return self.tokens(*self.document_span(d))

    def document_lengths(self) -> np.ndarray:
        """(num_documents,) int64 token counts."""
        return np.diff(np.asarray(self.sentence_offsets)[np.asarray(self.document_offsets)])

    def split_documents(self, eval_fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Document indices of a train / held-out split (the held-out part at least one document when
        ``eval_fraction > 0`` and there are two or more documents), chosen by ``seed``."""
        if not 0.0 <= eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
        order = np.random.default_rng(seed).permutation(self.num_documents)
        n_eval = int(round(eval_fraction * self.num_documents))
        if eval_fraction > 0 and self.num_documents > 1:
            n_eval = max(n_eval, 1)
        return np.sort(order[n_eval:]), np.sort(order[:n_eval])

    # --- building ---
    @classmethod
    def build(cls, corpus, tokenizer, *, cache_dir: Optional[str | os.PathLike] = None,
              shard_tokens: int = 2**28, batch_sentences: int = 8192, progress: bool = True) -> "TokenizedCorpus":
        """Tokenize ``corpus`` (documents of sentences) once into memory-mapped shards, or reuse the cache
        entry for the same corpus and tokenizer. ``cache_dir`` defaults to ``<cache_root>/tokenized``.
        Tokenization runs on every core (the ``tokenizers`` library's thread pool) with a progress bar."""
        corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        tokenizer = load_tokenizer(tokenizer)
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else os.path.join(cache_root(), "tokenized")
        final = os.path.join(cache_dir, f"{corpus.sha256[:16]}-{tokenizer_sha256(tokenizer)[:16]}")
        if os.path.exists(final):
            try:
                return cls.open(final)
            except ValueError:  # damaged or incomplete: set it aside, then rebuild
                aside = f"{final}.damaged-{os.getpid()}"
                try:
                    os.rename(final, aside)
                except OSError:
                    pass  # another process moved it first
                shutil.rmtree(aside, ignore_errors=True)
        tmp = f"{final}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            _write_shards(tmp, corpus, tokenizer, shard_tokens, batch_sentences, progress)
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same entry first: use it
                if not os.path.isfile(os.path.join(final, "meta.json")):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(final)


def _meta(corpus, tokenizer, vocab_size, sentence_offsets, shards) -> dict:
    return {"format": _FORMAT_VERSION, "num_tokens": int(sentence_offsets[-1]),
            "num_sentences": len(sentence_offsets) - 1, "num_documents": len(corpus), "vocab_size": vocab_size,
            "dtype": np.dtype(_token_dtype(vocab_size)).name, "shards": shards, "corpus_name": corpus.name,
            "corpus_sha256": corpus.sha256, "tokenizer_sha256": tokenizer_sha256(tokenizer)}


def _encode(corpus, tokenizer, dtype, batch_sentences, progress, on_sentence=None):
    """Token arrays of every sentence in order and their lengths; ``on_sentence(index)`` after each."""
    from tqdm.auto import tqdm
    sentences = [s for doc in corpus for s in doc]
    lengths = np.empty(len(sentences), dtype=np.int64)
    arrays = []
    with tqdm(total=len(sentences), desc=f"tokenizing {corpus.name}", unit="sent", disable=not progress,
              leave=False) as bar:
        for start in range(0, len(sentences), batch_sentences):
            chunk = sentences[start:start + batch_sentences]
            for i, enc in enumerate(tokenizer.encode_batch(chunk, add_special_tokens=False)):
                arrays.append(np.asarray(enc.ids, dtype=dtype))
                lengths[start + i] = len(enc.ids)
                if on_sentence is not None:
                    on_sentence(start + i, arrays)
            bar.update(len(chunk))
    return arrays, lengths


def _write_shards(directory, corpus, tokenizer, shard_tokens, batch_sentences, progress):
    vocab_size = _id_bound(tokenizer)
    dtype = _token_dtype(vocab_size)
    document_offsets = np.concatenate([[0], np.cumsum([len(doc) for doc in corpus])]).astype(np.int64)
    document_ends = set(document_offsets[1:].tolist())  # a shard may close only after a document's end
    shards = []
    state = {"first": 0, "tokens": 0}

    def flush(arrays, upto):
        name = f"tokens-{len(shards):05d}.npy"
        part = arrays[state["first"]:upto]
        np.save(os.path.join(directory, name), np.concatenate(part) if part else np.zeros(0, dtype))
        shards.append({"file": name, "tokens": int(sum(len(a) for a in part))})
        for i in range(state["first"], upto):  # written: free the memory
            arrays[i] = None
        state["first"], state["tokens"] = upto, 0

    def on_sentence(index, arrays):
        state["tokens"] += len(arrays[index])
        if state["tokens"] >= shard_tokens and index + 1 in document_ends:
            flush(arrays, index + 1)

    arrays, lengths = _encode(corpus, tokenizer, dtype, batch_sentences, progress, on_sentence)
    if state["first"] < len(arrays) or not shards:
        flush(arrays, len(arrays))
    sentence_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.save(os.path.join(directory, "sentence_offsets.npy"), sentence_offsets)
    np.save(os.path.join(directory, "document_offsets.npy"), document_offsets)
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(_meta(corpus, tokenizer, vocab_size, sentence_offsets, shards), f, indent=2)
