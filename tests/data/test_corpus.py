"""sslfast.data: corpus."""
import json
import os

import pytest

import sslfast.data as D


def test_default_corpus_is_documents_of_english_sentences_and_deterministic(corpus):
    assert len(corpus) > 100 and corpus.num_chars > 500_000
    assert all(isinstance(doc, list) and len(doc) >= 2 and all(isinstance(s, str) and s for s in doc)
               for doc in corpus)
    assert not any(">>>" in s for doc in corpus for s in doc)  # doctests left out
    again = D.default_corpus(cache=False)  # parsed anew, not read from the cache
    assert again == corpus and again.sha256 == corpus.sha256 and len(corpus.sha256) == 64


def test_default_corpus_cache_damage_is_rebuilt(corpus):
    folder = os.path.join(os.environ["SSLFAST_CACHE"], "corpus")
    names = [n for n in os.listdir(folder) if n.endswith(".json")]
    assert names, "default_corpus() wrote no cache file"
    for name in names:
        with open(os.path.join(folder, name), "w") as f:
            f.write('{"sha256": "0", "documents": [["x"]]}')  # wrong hash: not trusted
    assert D.default_corpus().sha256 == corpus.sha256


def test_load_corpus_txt_jsonl_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("First sentence here. Second one follows!\nStill the same doc.\n\n"
                                    "Another document starts. It ends.\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.jsonl").write_text(json.dumps({"text": "Json doc one. Two."}) + "\n\n" +
                                 json.dumps({"text": "Second json doc."}) + "\n")
    corpus = D.load_corpus(tmp_path)
    assert corpus == [["First sentence here.", "Second one follows!", "Still the same doc."],
                      ["Another document starts.", "It ends."],
                      ["Json doc one.", "Two."], ["Second json doc."]]
    whole = D.load_corpus(tmp_path / "a.txt", split="file")
    assert len(whole) == 1 and whole[0][-1] == "It ends."
    assert D.load_corpus([tmp_path / "a.txt"]).sha256 != whole.sha256


def test_sentence_splitting_keeps_closing_quotes_and_json_line_separators(tmp_path):
    assert D.split_sentences('He said "stop." Then (see below.) Next one? Yes.') == \
        ['He said "stop."', "Then (see below.)", "Next one?", "Yes."]
    (tmp_path / "u.jsonl").write_text(json.dumps({"text": "A line\u2028separator inside. Fine."}, ensure_ascii=False))
    assert D.load_corpus(tmp_path / "u.jsonl") == [["A line separator inside.", "Fine."]]  # whitespace collapsed
    assert D.Corpus([[]]).sha256 != D.Corpus([[""]]).sha256


def test_load_corpus_errors_name_the_problem(tmp_path):
    with pytest.raises(D.CorpusError, match="no such file"):
        D.load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(D.CorpusError, match="empty"):
        D.load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"Fine text. \xff\xfe broken")
    with pytest.raises(D.CorpusError, match=r"bad\.txt: bytes at offset 11"):
        D.load_corpus(tmp_path / "bad.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok."}\n{"text": \n')
    with pytest.raises(D.CorpusError, match=r"bad\.jsonl:2: not valid JSON"):
        D.load_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "field.jsonl").write_text('{"body": "no text field."}\n')
    with pytest.raises(D.CorpusError, match="string field 'text'"):
        D.load_corpus(tmp_path / "field.jsonl")
    with pytest.raises(ValueError, match="split"):
        D.load_corpus(tmp_path / "field.jsonl", split="lines")
