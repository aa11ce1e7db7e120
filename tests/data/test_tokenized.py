"""sslfast.data: tokenized corpus."""
import os

import numpy as np
import pytest

import sslfast.data as D


def test_tokenized_corpus_matches_the_tokenizer_sentence_by_sentence(corpus, wordpiece, tokenized):
    assert tokenized.num_documents == len(corpus) and tokenized.num_sentences == corpus.num_sentences
    assert tokenized.meta["dtype"] == "uint16"
    rng = np.random.default_rng(0)
    sentences = [s for doc in corpus for s in doc]
    for i in rng.choice(len(sentences), 50, replace=False):
        start, end = tokenized.sentence_offsets[i], tokenized.sentence_offsets[i + 1]
        assert tokenized.tokens(int(start), int(end)).tolist() == \
            wordpiece.encode(sentences[i], add_special_tokens=False).ids
    d = len(corpus) // 2
    joined = [t for s in corpus[d] for t in wordpiece.encode(s, add_special_tokens=False).ids]
    assert tokenized.document_tokens(d).tolist() == joined


def test_tokenized_cache_is_reused_sharded_at_documents_and_rebuilt_when_damaged(corpus, wordpiece, tmp_path,
                                                                               monkeypatch):
    small = D.Corpus(corpus[:40], name="small")
    built = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert len(built.meta["shards"]) > 2
    memory = D.TokenizedCorpus.encode(small, wordpiece)
    for d in range(len(small)):  # every document lies inside one shard and reads back the same
        assert np.array_equal(built.document_tokens(d), memory.document_tokens(d))
    import sslfast.data.tokenized as module
    monkeypatch.setattr(module, "_encode", lambda *a, **k: pytest.fail("re-tokenized a cached corpus"))
    again = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert again.directory == built.directory
    monkeypatch.undo()
    os.remove(os.path.join(built.directory, built.meta["shards"][1]["file"]))
    rebuilt = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert np.array_equal(rebuilt.document_tokens(5), memory.document_tokens(5))
    os.remove(os.path.join(rebuilt.directory, "meta.json"))  # an entry left half-deleted
    again = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert np.array_equal(again.document_tokens(7), memory.document_tokens(7))


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(70000)}
    vocab["[UNK]"] = 70000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    built = D.TokenizedCorpus.build([["w69999 w1 w65536"]], tok, cache_dir=tmp_path, progress=False)
    assert built.meta["dtype"] == "uint32" and built.document_tokens(0).tolist() == [69999, 1, 65536]
