"""Shared data fixtures: the embedded corpus, a WordPiece tokenizer trained on it, its tokenized cache (built
once per test session)."""
import math

import pytest

import sslfast.data as D


@pytest.fixture(scope="session")
def corpus():
    return D.default_corpus()


@pytest.fixture(scope="session")
def wordpiece(corpus):
    return D.train_tokenizer(corpus, "wordpiece", vocab_size=4000)


@pytest.fixture(scope="session")
def tokenized(corpus, wordpiece, tmp_path_factory):
    return D.TokenizedCorpus.build(corpus, wordpiece, cache_dir=tmp_path_factory.mktemp("tok"), progress=False)


@pytest.fixture(scope="session")
def special(wordpiece):
    return D.special_tokens(wordpiece)


def within(observed, expected_p, n, sigmas=5.0):
    """|observed fraction - p| within ``sigmas`` binomial standard deviations over n draws."""
    return abs(observed - expected_p) <= sigmas * math.sqrt(expected_p * (1 - expected_p) / n)
