"""``mu`` as a well-behaved Unix command (issue 20, item 7), as real subprocesses.

A reader that closes the pipe early ends ``mu`` quietly; a command line
that is not understood (an unknown option, a value out of range) exits
``EXIT_USAGE``, never 2 (not found); a pipe gets no progress lines; every
option's ``--help`` says what it is and what it defaults to.  (No progress
lines in a pipe: tests/node/network/test_add_report.py reads ``mu add``'s
stderr through a running node.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli import build_parser
from node.cli.exit_codes import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[3]


def mu(data_dir: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def test_a_reader_that_went_away_ends_mu_quietly(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(300 * 1024))
    assert mu(tmp_path, "add", str(sample), "--chunk-size", "65536").returncode == EXIT_OK
    # `mu store ls | head -0`: the reading end is closed before mu writes a byte, so every write fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "node", "--data-dir", str(tmp_path), "store", "ls"],
                                cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == EXIT_BROKEN_PIPE


@pytest.mark.parametrize("args, complaint", [
    (["ledger", "--limit", "-5"], "-5 is out of range"),
    (["ledger", "--limit", "many"], "'many' is not an integer"),
    (["add", "x", "--chunk-size", "100000"], "not a power of two"),
    (["add", "x", "--chunk-size", "128"], "out of range"),
    (["dht", "lookup", "00" * 20, "--timeout", "0"], "out of range"),
    (["store", "gc", "--now", "-1"], "out of range"),
    (["node", "--price-get", "-1"], "out of range"),
    (["node", "--dht-port", "70000"], "out of range"),
    (["wallet", "send", "bcrt1q", "0"], "out of range"),
    (["chain", "--rpc-port", "-2"], "out of range"),
    (["--no-such-option"], "unrecognized arguments"),
    (["no-such-command"], "invalid choice"),
    (["get"], "required"),
    ([], "usage: mu"),
])
def test_usage_errors_have_their_own_exit_code(tmp_path: Path, args: list[str], complaint: str) -> None:
    result = mu(tmp_path, *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert complaint in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "node.json").exists()


def _options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_has_help_and_every_option_with_a_value_says_its_default() -> None:
    for path, action in _options(build_parser(), "mu"):
        where = f"{path} {action.option_strings or action.dest}"
        assert action.help, f"{where} has no help"
        takes_value = action.option_strings and action.nargs != 0
        if takes_value or action.default not in (None, False, [], argparse.SUPPRESS):
            assert "default" in action.help, f"{where} does not say its default"


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    shown = mu(tmp_path, "ledger", "--help")
    assert shown.returncode == EXIT_OK
    words = " ".join(shown.stdout.split())  # argparse wraps to the terminal's width
    assert "--limit LIMIT" in words and "(default 50; 0: none)" in words
    assert "(default: content-defined chunks of 262144 to 4194304 bytes, average parameter 1048576)" in " ".join(
        mu(tmp_path, "add", "--help").stdout.split())
