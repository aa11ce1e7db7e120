"""Text corpora as documents of sentences: the embedded default corpus and the user's own files.

A corpus is a :class:`Corpus`: a list of documents, each a list of sentences (``str``), with a name and a
content hash (SHA-256 of its text) that keys every cache built from it.

The embedded default corpus is English text every Python installation already has: the docstrings of the
Python standard library's modules, classes and functions (the Python documentation's own source text,
under the PSF licence), one document per module, doctest examples and code blocks left out. It is read with
``ast`` (nothing is imported), in a fixed file order, so the same Python version gives the same bytes on
every machine; the parsed result is cached on disk.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
import sysconfig
from typing import Iterable, Sequence

from sslfast._atomic import atomic_write_text
from sslfast._cache import cache_root
from sslfast.data.columnar import (
    COLUMNAR_SUFFIXES,
    columnar_files,
    columnar_texts,
    is_datasets_folder,
)
from sslfast.data.errors import CorpusError

__all__ = ["Corpus", "CorpusError", "default_corpus", "load_corpus", "split_sentences"]

# standard-library folders that hold tests, bundled third-party code or generated tables, not prose
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3",
                 "ensurepip", "turtledemo", "encodings"}
# whitespace after . ! ? (and any closing quote or bracket) before a capital, digit or opening quote
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MIN_WORDS = 3  # a fragment with fewer real words ("Args:", "Returns None.") is not a sentence


class Corpus(list):
    """A list of documents (each a list of sentences) with a ``name`` and a content hash ``sha256``."""

    def __init__(self, documents: Iterable[Sequence[str]] = (), name: str = "corpus"):
        super().__init__(list(doc) for doc in documents)
        self.name = name
        self._sha256 = None

    @property
    def sha256(self) -> str:
        """SHA-256 of the text: per document its sentence count, then its sentences joined by U+001F."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for doc in self:
                digest.update(len(doc).to_bytes(8, "little"))  # [[]] and [[""]] differ
                digest.update("\x1f".join(doc).encode("utf-8"))
                digest.update(b"\x1e")
            self._sha256 = digest.hexdigest()
        return self._sha256

    @property
    def num_sentences(self) -> int:
        return sum(len(doc) for doc in self)

    @property
    def num_chars(self) -> int:
        return sum(len(s) for doc in self for s in doc)

    def __repr__(self) -> str:
        return (f"Corpus(name={self.name!r}, documents={len(self)}, sentences={self.num_sentences}, "
                f"chars={self.num_chars}, sha256={self.sha256[:12]}…)")


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph of prose: whitespace collapsed, split after ``.!?`` before a capital."""
    text = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(text) if s]


# --- the embedded default corpus -------------------------------------------------------------------------

def _stdlib_files() -> tuple[str, list[str]]:
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith((".", "config-")))
        files.extend(os.path.join(directory, n) for n in sorted(names) if n.endswith(".py"))
    return root, files


def _prose_sentences(docstring: str) -> list[str]:
    """The prose of a docstring: paragraphs without doctests, indented code or reST directives."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = paragraph.splitlines()
        if any(line.lstrip().startswith((">>>", "...", ".. ", "$ ", "%")) for line in lines):
            continue
        if lines and all(line.startswith((" ", "\t")) for line in lines):  # an indented code block
            continue
        sentences.extend(s for s in split_sentences(paragraph) if len(_WORD.findall(s)) >= _MIN_WORDS)
    return sentences


def _module_document(path: str) -> list[str]:
    """Every docstring of one module in source order (module, classes, functions, nested)."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, ValueError, OSError):  # a file the running interpreter cannot parse
        return []
    sentences: list[str] = []

    def visit(node):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                sentences.extend(_prose_sentences(doc))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child)

    visit(tree)
    return sentences


def default_corpus(*, min_sentences: int = 2, cache: bool = True) -> Corpus:
    """The embedded English corpus: the Python standard library's docstrings, one document per module.

    About 1.3 MB of text with Python 3.11; the same Python version gives the same documents (and
    ``sha256``) on every machine. Documents with fewer than ``min_sentences`` sentences are left out.
    Parsing takes a few seconds; the result is cached under ``sslfast.data.cache_root()``.
    """
    root, files = _stdlib_files()
    stamp = hashlib.sha256(json.dumps([sys.version, root, min_sentences] + [
        (os.path.relpath(p, root), os.path.getsize(p)) for p in files]).encode()).hexdigest()[:20]
    cache_path = os.path.join(cache_root(), "corpus", f"stdlib-docstrings-{stamp}.json")
    name = f"python{sys.version_info.major}.{sys.version_info.minor}-stdlib-docstrings"
    if cache and os.path.isfile(cache_path):
        try:
            with open(cache_path, encoding="utf-8") as f:
                stored = json.load(f)
            corpus = Corpus(stored["documents"], name=name)
            if corpus.sha256 == stored["sha256"]:
                return corpus
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt below
    documents = [doc for doc in map(_module_document, files) if len(doc) >= min_sentences]
    corpus = Corpus(documents, name=name)
    if cache:
        atomic_write_text(cache_path, json.dumps({"sha256": corpus.sha256, "documents": corpus}))
    return corpus


# --- the user's text ----------------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: bytes at offset {err.start} are not valid UTF-8 "
                          f"({data[err.start:err.start + 8]!r}); re-encode the file as UTF-8") from None


def _paragraph_sentences(text: str) -> list[str]:
    """Sentences of a text whose paragraphs end at blank lines (lines inside a paragraph are joined)."""
    return [s for paragraph in re.split(r"\n\s*\n", text) for s in split_sentences(paragraph)]


def _jsonl_documents(path: str, text_field: str) -> list[list[str]]:
    documents = []
    for number, line in enumerate(_read_text(path).split("\n"), 1):  # not splitlines(): U+2028 is valid JSON
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise CorpusError(f"{path}:{number}: expected an object with a string field {text_field!r}")
        sentences = _paragraph_sentences(record[text_field])
        if sentences:
            documents.append(sentences)
    return documents


def load_corpus(source, *, split: str = "blank-line", text_field: str = "text") -> Corpus:
    """Documents from ``.txt`` / ``.jsonl`` / ``.parquet`` / ``.arrow`` files, folders of them, a ``datasets``
    folder written by ``save_to_disk``, or a list of those paths.

    ``split`` says where a ``.txt`` file's documents end: ``"blank-line"`` (a blank line ends a
    document, as in BERT's original input format) or ``"file"`` (the whole file is one document, its blank
    lines end paragraphs). Sentences are found by punctuation, so hard-wrapped prose and one sentence per
    line both work. A ``.jsonl`` file gives one document per line, the text under ``text_field``. Folders are
    searched recursively, in sorted order. Raises :class:`CorpusError` for an empty corpus, a file that
    is not UTF-8 (naming the file and byte offset) or a malformed JSON line. Parquet / Arrow rows are documents,
    their text in the column ``text_field`` (:mod:`sslfast.data.columnar`).
    """
    if split not in ("blank-line", "file"):
        raise ValueError(f"split must be 'blank-line' or 'file', got {split!r}")
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path) and is_datasets_folder(path):
            files.extend(columnar_files(path))
        elif os.path.isdir(path):
            for directory, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(os.path.join(directory, n) for n in sorted(names)
                             if n.endswith((".txt", ".jsonl") + COLUMNAR_SUFFIXES))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or directory")
    if not files:
        raise CorpusError(f"no .txt, .jsonl, .parquet or .arrow files in {', '.join(map(os.fspath, paths))}")
    documents = []
    for path in files:
        if path.endswith(COLUMNAR_SUFFIXES):  # one document per row
            documents.extend(_paragraph_sentences(text) for text in columnar_texts(path, text_field))
        elif path.endswith(".jsonl"):
            documents.extend(_jsonl_documents(path, text_field))
        else:
            text = _read_text(path)
            if split == "file":
                documents.append(_paragraph_sentences(text))
            else:
                documents.extend(split_sentences(block) for block in re.split(r"\n\s*\n", text))
    documents = [doc for doc in documents if doc]
    if not documents:
        raise CorpusError(f"the corpus in {', '.join(map(os.fspath, paths))} is empty (no text in "
                          f"{len(files)} file(s))")
    name = os.path.basename(os.path.normpath(os.fspath(paths[0]))) if len(paths) == 1 else "corpus"
    return Corpus(documents, name=name)
