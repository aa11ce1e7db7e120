"""sslfast.data: images."""

import numpy as np
import pytest

import sslfast.data as D


def test_digits_and_image_files(tmp_path):
    dg = D.digits()
    assert dg.images.shape == (1797, 1, 8, 8) and dg.images.dtype == np.float32
    assert 0.0 <= dg.images.min() and dg.images.max() == 1.0 and set(dg.labels.tolist()) == set(range(10))
    assert D.digits(flatten=True).sample_shape == (64,)
    batch = D.BatchLoader(dg, D.ImageCollator(), batch_size=32).make_batch(0, 0)
    assert batch["pixel_values"].shape == (32, 1, 8, 8) and batch["labels"].shape == (32,)
    np.save(tmp_path / "x.npy", dg.images[:10])
    assert D.load_images(tmp_path / "x.npy").images.shape == (10, 1, 8, 8)
    np.savez(tmp_path / "x.npz", images=dg.images[:10], labels=dg.labels[:10])
    loaded = D.load_images(tmp_path / "x.npz")
    assert np.array_equal(loaded.labels, dg.labels[:10])
    bad = dg.images[:4].copy()
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*sample 2"):
        D.load_images(bad)
    with pytest.raises(ValueError, match="empty"):
        D.ImageDataset(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, D\)"):
        D.ImageDataset(np.zeros((3, 8, 8)))


def test_parquet_arrow_and_datasets_folders_read_their_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import json as _json

    import pyarrow.parquet as pq

    from sslfast.data import CorpusError, load_corpus
    texts = [f"Document {i} starts here. It has a second sentence." for i in range(50)]
    table = pa.table({"id": list(range(50)), "body": texts})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)  # several batches
    with pa.ipc.new_file(str(tmp_path / "c.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=9)
    folder = tmp_path / "saved"  # the layout datasets' save_to_disk writes: Arrow streams named in state.json
    folder.mkdir()
    with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=11)
    (folder / "state.json").write_text(_json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    for source in (tmp_path / "c.parquet", tmp_path / "c.arrow", folder):
        corpus = load_corpus(str(source), text_field="body")
        assert len(corpus) == 50 and corpus[3] == ["Document 3 starts here.", "It has a second sentence."], source
    with pytest.raises(CorpusError, match="no column 'text'.*body"):
        load_corpus(str(tmp_path / "c.parquet"))
    with pytest.raises(CorpusError, match="holds int64, not text"):
        load_corpus(str(tmp_path / "c.arrow"), text_field="id")
