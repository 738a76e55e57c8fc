"""The docs stay true: generated pages are current, commands parse, links resolve."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import build_parser

from .conftest import ROOT, require_tool

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = (("signalwire-exporter",), ("python", "-m", "exporter"),
            ("python3", "-m", "exporter"))


def test_configuration_reference_is_generated_from_the_example() -> None:
    generated = subprocess.run([sys.executable, str(ROOT / "tools" / "config_docs.py")],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    assert (ROOT / "docs" / "configuration.md").read_text() == generated, (
        "run: python3 tools/config_docs.py > docs/configuration.md")


def shell_commands(path: Path) -> list[str]:
    """Each simple command in the file's ``sh`` blocks (continuations joined, && split)."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.extend(part.strip() for part in line.split("&&"))
    return commands


def exporter_arguments(command: str) -> list[str] | None:
    """The arguments after the exporter's program name, or None for other commands."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word in ("|", ">", "<", ">>", "2>&1"):  # what follows is the shell's, not ours
            words = words[:i]
            break
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        words.pop(0)  # VAR=value prefixes
    for program in PROGRAMS:
        if tuple(words[:len(program)]) == program:
            return words[len(program):]
    return None


def documented_invocations() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOCS:
        for command in shell_commands(path):
            arguments = exporter_arguments(command)
            if arguments is not None:
                found.append((f"{path.name}: {command}", arguments))
    return found


def test_docs_show_the_exporter_commands() -> None:
    shown = {tuple(arguments[:1]) for _, arguments in documented_invocations()}
    assert ("check-config",) in shown
    assert () in shown  # plain run on defaults (README quickstart)


@pytest.mark.parametrize(("where", "arguments"), documented_invocations(),
                         ids=[where for where, _ in documented_invocations()])
def test_every_documented_command_is_one_the_cli_accepts(where: str,
                                                         arguments: list[str]) -> None:
    parser = build_parser()
    try:
        parser.parse_args(arguments)
    except SystemExit as exc:  # argparse exits 2 on an unknown flag or bad value
        if exc.code != 0:  # --help and --version exit 0
            pytest.fail(f"{where}: the CLI rejects {arguments} (exit {exc.code})")


def test_relative_links_resolve() -> None:
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} → {target}")
    assert not broken


def test_readme_quickstart_callback_is_counted(exporter_process: Any) -> None:
    # The README's curl lines, sent to a local exporter instead of the compose one on :9880.
    curl = require_tool("curl")
    exporter = exporter_process()
    lines = [c for c in shell_commands(ROOT / "README.md")
             if c.startswith("curl") and "localhost:9880" in c]
    assert len(lines) == 2
    outputs = []
    for line in lines:
        command = line.replace("localhost:9880", f"127.0.0.1:{exporter.port}")
        command = command.replace("curl", curl, 1)
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert 'signalwire_calls_total{direction="unknown",status="completed"} 1.0' in outputs[1]
