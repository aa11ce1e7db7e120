"""The public API and CLI the README shows: every dotted ``sslfast`` name it mentions resolves, every
``from sslfast... import`` line of its code runs, every flag it gives a subcommand exists."""
import importlib
import os
import re

import pytest

import sslfast
from sslfast.cli import build_parser
from sslfast.selftest import main as selftest_main  # noqa: F401  (selftest's own parser, below)
from tests.helpers import REPO

README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
PRIVATE_OK = {"sslfast._C"}  # the compiled extension: named in the README as the build's product


def resolve(dotted: str):
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def readme_names():
    return sorted(set(re.findall(r"\bsslfast(?:\.[A-Za-z_][A-Za-z0-9_]*)+", README)) - PRIVATE_OK)


def test_the_readme_names_enough_to_mean_something():
    names = readme_names()
    assert len(names) >= 30 and "sslfast.models.RobertaForMaskedLM.from_pretrained" in names


@pytest.mark.parametrize("dotted", readme_names())
def test_every_dotted_name_in_the_readme_resolves(dotted):
    resolve(dotted)


def test_every_import_line_in_the_readme_runs():
    lines = re.findall(r"^\s*(from sslfast[\w.]* import [^\n#]+|import sslfast[^\n#]*)", README, flags=re.M)
    assert lines, "the README shows no import"
    for line in lines:
        exec(line.strip().rstrip("\\"), {})


def test_every_name_models_and_ops_export_is_there():
    for module in (sslfast, sslfast.models, sslfast.ops, sslfast.nn, sslfast.data, sslfast.train):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def subcommand_flags():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    return {name: {s for a in sub._actions for s in a.option_strings} for name, sub in subparsers.items()}


def test_every_flag_the_readme_gives_a_subcommand_exists():
    flags = subcommand_flags()
    used = re.findall(r"sslfast (bench|pretrain|finetune|evaluate|plot-metrics)((?: [^\n`|#]*)?)", README)
    checked = 0
    for command, rest in used:
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert flag in flags[command] or flag == "--help", f"sslfast {command} {flag} (README) does not exist"
            checked += 1
    assert checked >= 20, f"only {checked} flags found in the README"
