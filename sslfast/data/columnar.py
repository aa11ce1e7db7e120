"""Text corpora in the columnar formats users keep them in: Parquet files, Arrow files (IPC file or stream)
and Hugging Face ``datasets`` folders written by ``save_to_disk`` (Arrow streams plus ``state.json``).

Read with pyarrow (``pip install pyarrow``), one record batch at a time and only the text column: the other
columns are never loaded, and each batch is split into sentences before the next is read.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from sslfast.data.errors import CorpusError

__all__ = ["COLUMNAR_SUFFIXES", "is_datasets_folder", "columnar_files", "columnar_texts"]

COLUMNAR_SUFFIXES = (".parquet", ".arrow")


def is_datasets_folder(path: str) -> bool:
    """A folder written by ``datasets.Dataset.save_to_disk`` (``state.json`` naming its Arrow files)."""
    return os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))


def columnar_files(path: str) -> list[str]:
    """The Arrow files of a ``save_to_disk`` folder, in its own order."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    return [os.path.join(path, entry["filename"]) for entry in state.get("_data_files", [])]


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise CorpusError("reading Parquet / Arrow / datasets folders needs pyarrow: pip install pyarrow") from None
    return pyarrow


def _batches(path: str, column: str):
    pa = _pyarrow()
    if path.endswith(".parquet"):
        parquet = pa.parquet.ParquetFile(path)
        if column not in parquet.schema_arrow.names:
            raise CorpusError(f"{path}: no column {column!r} (--text-column); the columns are "
                              f"{parquet.schema_arrow.names}")
        yield from parquet.iter_batches(columns=[column], batch_size=1024)
        return
    source = pa.memory_map(path)
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # datasets writes Arrow streams
        source.seek(0)
        reader = pa.ipc.open_stream(source)
        batches = iter(reader)
    if column not in reader.schema.names:
        raise CorpusError(f"{path}: no column {column!r} (--text-column); the columns are {reader.schema.names}")
    for batch in batches:
        yield batch.select([column])


def columnar_texts(path: str, column: str) -> Iterator[str]:
    """The non-empty strings of ``column``, batch by batch."""
    pa = _pyarrow()
    for batch in _batches(path, column):
        values = batch.column(0)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise CorpusError(f"{path}: column {column!r} holds {values.type}, not text")
        for text in values.to_pylist():
            if text:
                yield text
