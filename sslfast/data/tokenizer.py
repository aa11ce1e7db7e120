"""Tokenizers from the ``tokenizers`` library: WordPiece for BERT, byte-level BPE for GPT-2 and for RoBERTa.

Trained on a corpus or loaded from any ``tokenizer.json``; saved in Hugging Face's layout
(``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``) so
``transformers.AutoTokenizer.from_pretrained(directory)`` loads them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterable, Optional, Sequence

from sslfast._atomic import atomic_write_text
from sslfast._cache import cache_root
from sslfast.data.corpus import Corpus

__all__ = ["train_tokenizer", "load_tokenizer", "save_tokenizer", "tokenizer_sha256", "SpecialTokens",
           "special_tokens", "tokenizer_kind", "KINDS", "WORDPIECE_SPECIAL_TOKENS", "BPE_SPECIAL_TOKENS",
           "ROBERTA_SPECIAL_TOKENS"]

KINDS = ("wordpiece", "bpe", "roberta-bpe")
WORDPIECE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BPE_SPECIAL_TOKENS = ("<|endoftext|>",)
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0-4, as RoBERTa's


def _sentences(documents: Iterable[Sequence[str]]):
    for doc in documents:
        if isinstance(doc, str):
            yield doc
        else:
            yield from doc


def train_tokenizer(documents, kind: str = "wordpiece", vocab_size: int = 8192, *, lowercase: bool = True,
                    min_frequency: int = 2, special_tokens: Optional[Sequence[str]] = None,
                    show_progress: bool = False, cache: bool = True):
    """A ``tokenizers.Tokenizer`` trained on ``documents`` (lists of sentences, or strings).

    ``kind="wordpiece"`` (BERT: lower-cased unless ``lowercase=False``, ``##`` continuations, special
    tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as ids 0–4, ``[CLS] A [SEP] B [SEP]`` templates) or
    ``kind="bpe"`` (GPT-2's byte-level BPE: any text encodes, no unknown token, ``<|endoftext|>`` id 0) or
    ``kind="roberta-bpe"`` (RoBERTa's: byte-level BPE, ``<s> <pad> </s> <unk> <mask>`` as ids 0–4,
    ``<s> A </s>`` / ``<s> A </s></s> B </s>`` templates).
    ``vocab_size`` counts the special tokens. Training on the default corpus takes about a second.

    The ``tokenizers`` library's WordPiece trainer is not deterministic (huggingface/tokenizers#1794: ids of
    ``##`` pieces follow hash-map order and decide ties between merges), so with ``cache=True`` the first
    tokenizer trained for the same corpus and options is stored under ``sslfast.data`` 's cache and returned
    again: repeated runs on a machine get the same vocabulary. Keep the saved ``tokenizer.json`` of a run to
    reproduce it elsewhere.
    """
    from tokenizers import Tokenizer
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = None
    if cache:
        import tokenizers

        corpus = documents if isinstance(documents, Corpus) else Corpus(
            [doc] if isinstance(doc, str) else doc for doc in documents)
        key = json.dumps([corpus.sha256, kind, vocab_size, lowercase, min_frequency, list(special_tokens or []),
                          tokenizers.__version__])
        path = os.path.join(cache_root(), "tokenizers", hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        if os.path.isfile(path):
            try:
                return Tokenizer.from_file(path)
            except Exception:  # a damaged cache file: train again
                pass
    tokenizer = _train(documents, kind, vocab_size, lowercase, min_frequency, special_tokens, show_progress)
    if path is not None:
        atomic_write_text(path, tokenizer.to_str())
    return tokenizer


def _train(documents, kind, vocab_size, lowercase, min_frequency, special_tokens, show_progress):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "wordpiece":
        specials = list(special_tokens or WORDPIECE_SPECIAL_TOKENS)
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]") if t not in specials]
        if missing:
            raise ValueError(f"a WordPiece tokenizer needs the special tokens {missing}")
    elif kind == "roberta-bpe":
        specials = list(special_tokens or ROBERTA_SPECIAL_TOKENS)
        missing = [t for t in ("<s>", "</s>", "<pad>", "<mask>") if t not in specials]
        if missing:
            raise ValueError(f"a RoBERTa tokenizer needs the special tokens {missing}")
    else:
        specials = list(special_tokens or BPE_SPECIAL_TOKENS)
    byte_level = kind != "wordpiece"
    if vocab_size <= len(specials) + (256 if byte_level else 0):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the special tokens"
                         + (" and the 256 byte tokens" if byte_level else ""))
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=None, lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials, continuing_subword_prefix="##",
                                            show_progress=show_progress)
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=show_progress)
    sentences = list(_sentences(documents))
    if not any(s.strip() for s in sentences):
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tokenizer.train_from_iterator(sentences, trainer=trainer, length=len(sentences))
    if kind == "wordpiece":
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    elif kind == "roberta-bpe":
        tokenizer.post_processor = processors.RobertaProcessing(
            ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")),
            trim_offsets=False, add_prefix_space=False)
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def load_tokenizer(source):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, a directory holding one, or a
    ``transformers`` fast tokenizer object."""
    from tokenizers import Tokenizer
    if isinstance(source, Tokenizer):
        return source
    backend = getattr(source, "backend_tokenizer", None)
    if backend is not None:
        return backend
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no tokenizer.json at {os.fspath(source)!r}")
    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # the Rust side raises a bare Exception
        raise ValueError(f"{path} is not a valid tokenizer.json: {err}") from None


def tokenizer_sha256(tokenizer) -> str:
    """SHA-256 of the tokenizer's full JSON (vocabulary, merges, normalizer, templates)."""
    return hashlib.sha256(load_tokenizer(tokenizer).to_str().encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens an objective needs (``None`` where the tokenizer has none)."""
    pad: Optional[int] = None
    unk: Optional[int] = None
    cls: Optional[int] = None
    sep: Optional[int] = None
    mask: Optional[int] = None
    eos: Optional[int] = None

    @property
    def ids(self) -> list[int]:
        return sorted({i for i in dataclasses.astuple(self) if i is not None})

    def require(self, *names: str, purpose: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{purpose} needs a tokenizer with the special token(s) {missing}; this one has "
                             f"{ {k: v for k, v in dataclasses.asdict(self).items() if v is not None} }")


_NAMES = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>", "<cls>"),
          "sep": ("[SEP]", "</s>", "<sep>"), "mask": ("[MASK]", "<mask>"), "eos": ("<|endoftext|>", "</s>", "[SEP]")}


def special_tokens(tokenizer) -> SpecialTokens:
    """The special-token ids of ``tokenizer``, found by their usual names (BERT's and GPT-2's)."""
    tokenizer = load_tokenizer(tokenizer)

    def find(names):
        for name in names:
            token_id = tokenizer.token_to_id(name)
            if token_id is not None:
                return token_id
        return None
    return SpecialTokens(**{field: find(names) for field, names in _NAMES.items()})


def tokenizer_kind(tokenizer) -> str:
    """``"wordpiece"``, ``"bpe"`` (byte-level BPE) or ``"roberta-bpe"`` (byte-level BPE with RoBERTa's
    ``<s> A </s>`` template), from the tokenizer's model and post-processor."""
    values = json.loads(load_tokenizer(tokenizer).to_str())
    model = values["model"]["type"]
    if model == "BPE" and (values.get("post_processor") or {}).get("type") == "RobertaProcessing":
        return "roberta-bpe"
    return {"WordPiece": "wordpiece", "BPE": "bpe"}.get(model, model.lower())


def save_tokenizer(tokenizer, directory: str | os.PathLike, *, model_max_length: int = 512) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` into
    ``directory``, the layout ``transformers.AutoTokenizer.from_pretrained`` reads."""
    tokenizer = load_tokenizer(tokenizer)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    ids = special_tokens(tokenizer)
    names = {field: tokenizer.id_to_token(i) for field, i in dataclasses.asdict(ids).items() if i is not None}
    if tokenizer_kind(tokenizer) == "wordpiece":
        specials = {f"{k}_token": names[k] for k in ("pad", "unk", "cls", "sep", "mask") if k in names}
        lowercase = json.loads(tokenizer.to_str()).get("normalizer", {}) or {}
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(lowercase.get("lowercase", False))}
    elif tokenizer_kind(tokenizer) == "roberta-bpe":
        specials = {f"{k}_token": names[k] for k in ("pad", "unk", "cls", "sep", "mask") if k in names}
        specials.update({"bos_token": names["cls"], "eos_token": names["sep"]})
        config = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": False}
    else:
        eos = names.get("eos")
        specials = {"bos_token": eos, "eos_token": eos, "unk_token": eos} if eos else {}
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    config.update(specials, model_max_length=model_max_length, clean_up_tokenization_spaces=False)
    atomic_write_text(os.path.join(directory, "tokenizer.json"), tokenizer.to_str(pretty=False))
    atomic_write_text(os.path.join(directory, "tokenizer_config.json"), json.dumps(config, indent=2))
    atomic_write_text(os.path.join(directory, "special_tokens_map.json"), json.dumps(specials, indent=2))
