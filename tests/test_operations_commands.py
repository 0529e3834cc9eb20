"""Every command shown in docs/operations.md's code blocks is one our programs accept.

Each command (backslash continuations joined, ``<placeholders>`` filled in) is checked
twice: its program answers ``--help`` for that subcommand as a separate process (the
console script is installed and starts), and the whole command line, options and all,
goes through the program's real argparse parser, stopped right after parsing so that
nothing is run. A renamed command, option or choice fails here.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "docs" / "operations.md"
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9-]*>")
#: What a placeholder stands for when the parser checks its form.
PLACEHOLDER_VALUES = {"<root-id>": "0f4e3b1c-6a1e-4c38-9f7e-1b2a3c4d5e6f",
                      "<issuer-id>": "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
                      "<new-label>": "issuing-rsa-2027"}


def documented_commands() -> list[list[str]]:
    """The command lines in the code blocks, as argv lists."""
    text = OPERATIONS.read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            commands.append(shlex.split(PLACEHOLDER.sub(
                lambda m: PLACEHOLDER_VALUES.get(m.group(0), "example"), line)))
    return commands


def console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="console_scripts")
            if ep.name.startswith("chancery")}


COMMANDS = documented_commands()


def test_the_operations_page_shows_commands_of_every_operator_program():
    shown = {argv[0] for argv in COMMANDS}
    assert {"chancery", "chancery-ca", "chancery-stack", "chancery-identity",
            "chancery-ledger", "chancery-audit"} <= shown
    assert all(program in console_scripts() for program in shown), shown


class Parsed(Exception):
    """Raised by the patched parser once the command line parsed."""


def parse_only(program: str, argv: list[str], monkeypatch) -> argparse.Namespace:
    """``argv`` through ``program``'s real parser; the command itself never runs."""
    [entry] = [ep for ep in entry_points(group="console_scripts") if ep.name == program]
    main = entry.load()
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed) as parsed:
        main(argv)
    return parsed.value.args[0]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_a_documented_command_is_accepted(argv, monkeypatch, capsys):
    program, *arguments = argv
    options_from = next((n for n, arg in enumerate(arguments) if arg.startswith("-")),
                        len(arguments))
    helped = subprocess.run(
        [str(Path(sys.executable).parent / program), *arguments[:options_from], "--help"],
        capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "usage:" in helped.stdout
    try:
        namespace = parse_only(program, arguments, monkeypatch)
    except SystemExit as exc:  # argparse's refusal: exit 2 and the reason on stderr
        pytest.fail(f"{' '.join(argv)} is refused: {capsys.readouterr().err.strip()} "
                    f"(exit {exc.code})")
    assert isinstance(namespace, argparse.Namespace)


def test_a_wrong_argument_is_caught(monkeypatch, capsys):
    """The check can fail: the form docs/operations.md showed before it was corrected."""
    with pytest.raises(SystemExit):
        parse_only("chancery", ["dead-letters", "list"], monkeypatch)
    assert "required: queue" in capsys.readouterr().err
