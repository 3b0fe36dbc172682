"""Every command's ``--help``, and each subcommand's, prints without error (argparse formats help strings with ``%``,
so a literal ``%`` in one crashed ``python -m aen_lib.lmref --help`` once), and the old top-level command names that
committed provenance records still reach the same parsers."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from aen_lib.data import corpus
from aen_lib.results import lmref, reference

MAINS = {"reference": reference.main, "lmref": lmref.main, "corpus": corpus.main}


def _subcommands(main) -> list[str]:
    parsers: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):  # the parser main() builds, without running anything
        parsers.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    subs = [a for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(subs[0].choices) if subs else []


@pytest.mark.parametrize("name", sorted(MAINS))
def test_help_of_every_subcommand_prints(name, capsys):
    main = MAINS[name]
    subs = _subcommands(main)
    assert subs, f"{name} has no subcommands to check"
    for argv in [["--help"]] + [[s, "--help"] for s in subs]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0, argv
        assert "usage:" in capsys.readouterr().out, argv


@pytest.mark.parametrize("old, new", [("aen_lib.reference", "aen_lib.results.reference"),
                                      ("aen_lib.lmref", "aen_lib.results.lmref")])
def test_recorded_command_names_still_run(old, new):
    out = {}
    for mod in (old, new):
        p = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        out[mod] = p.stdout  # the parser names its program itself, so the two print the same
    assert out[old] == out[new]
