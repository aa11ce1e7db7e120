"""What a user meets at the command line: one clear line and exit status 2 for their mistakes, --version."""
import pytest

import sslfast
from sslfast.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"sslfast {sslfast.__version__}"


@pytest.mark.parametrize("problem", ["missing file", "malformed jsonl"])
def test_bad_data_is_one_line_and_exit_2(problem, tmp_path, capsys):
    data = tmp_path / "corpus.jsonl"
    if problem == "missing file":
        data = tmp_path / "nowhere" / "x.txt"
    else:
        data.write_text('{"text": "one document"}\n{not json\n')
    code = main(["pretrain", "--data", str(data), "--max-steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sslfast pretrain: error: ") and "Traceback" not in err, err
    assert str(data) in err and ("no such file" in err if problem == "missing file" else ":2:" in err)


@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_debug_shows_the_traceback(where, tmp_path):
    from sslfast.data.corpus import CorpusError
    args = ["pretrain", "--data", str(tmp_path / "x.txt"), "--max-steps", "1", "--out", str(tmp_path / "run")]
    with pytest.raises(CorpusError):
        main(["--debug"] + args if where == "before the command" else args + ["--debug"])


def test_a_bug_still_raises(monkeypatch, tmp_path):
    import importlib
    pretrain_module = importlib.import_module("sslfast.train.pretrain")  # the module, not the function

    def broken(config):
        raise ZeroDivisionError("a bug, not a user error")
    monkeypatch.setattr(pretrain_module, "pretrain", broken)
    with pytest.raises(ZeroDivisionError):
        main(["pretrain", "--max-steps", "1", "--out", str(tmp_path / "run")])


def test_help_describes_what_exists_today(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "as they land" not in text and "GPT-2" in text and "auto-encoder" in text
