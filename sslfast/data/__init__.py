"""Pretraining data: corpora, tokenizers, tokenized caches, the self-supervised objectives and loaders.

Text → :func:`default_corpus` / :func:`load_corpus` → :func:`train_tokenizer` / :func:`load_tokenizer` →
:meth:`TokenizedCorpus.build` (memory-mapped, cached) → an example dataset (:class:`MaskedLMDataset`,
:class:`SentencePairDataset`, :class:`CausalLMDataset`) → a collator (:class:`MLMCollator`,
:class:`CausalLMCollator`) → :class:`BatchLoader` (deterministic per seed and epoch, rank-sharded,
resumable). Images for the auto-encoders: :func:`digits` → :class:`ImageCollator`.
"""
from sslfast.data.collators import (
                                    CausalLMCollator,
                                    ImageCollator,
                                    MLMCollator,
                                    continuation_table,
                                    pad_rows,
)
from sslfast.data.corpus import (
                                    Corpus,
                                    CorpusError,
                                    default_corpus,
                                    load_corpus,
                                    split_sentences,
)
from sslfast.data.images import ImageDataset, digits, load_images
from sslfast.data.loader import BatchLoader
from sslfast.data.masking import IGNORE_INDEX, mask_tokens
from sslfast.data.packing import CausalLMDataset, pack_documents
from sslfast.data.sampler import ResumableSampler, example_seeds
from sslfast.data.segments import MaskedLMDataset
from sslfast.data.sentence_pairs import SentencePairDataset, sentence_pairs
from sslfast.data.tokenized import TokenizedCorpus
from sslfast.data.tokenizer import (
                                    SpecialTokens,
                                    load_tokenizer,
                                    save_tokenizer,
                                    special_tokens,
                                    tokenizer_kind,
                                    tokenizer_sha256,
                                    train_tokenizer,
)

__all__ = [
    "Corpus", "CorpusError", "default_corpus", "load_corpus", "split_sentences",
    "train_tokenizer", "load_tokenizer", "save_tokenizer", "tokenizer_sha256", "tokenizer_kind", "special_tokens",
    "SpecialTokens", "TokenizedCorpus",
    "mask_tokens", "IGNORE_INDEX", "sentence_pairs", "pack_documents",
    "MaskedLMDataset", "SentencePairDataset", "CausalLMDataset", "ImageDataset", "digits", "load_images",
    "MLMCollator", "CausalLMCollator", "ImageCollator", "continuation_table", "pad_rows",
    "ResumableSampler", "example_seeds", "BatchLoader",
]
