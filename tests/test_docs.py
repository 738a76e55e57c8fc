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


# --- newcomer frictions (issue 14) ---------------------------------------------------------

def test_docker_compose_commands_name_real_services() -> None:
    import yaml

    services = set(yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"])
    for path in DOCS:
        for match in re.finditer(r"docker compose (?:up|restart|logs|stop)[^`\n]*",
                                 path.read_text()):
            named = [word for word in match.group(0).split()[3:] if not word.startswith("-")]
            assert set(named) <= services, (path.name, match.group(0))


def test_generate_both_writes_two_files() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"generate both in one go.*?```sh\n(.*?)```", text, flags=re.S)
    assert block is not None
    outputs = re.findall(r"(?:>|--output)\s+(\S+)", block.group(1))
    assert len(outputs) == 2 and len(set(outputs)) == 2, outputs


def test_prometheusrule_tool_has_help() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "prometheusrule.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "PrometheusRule" in result.stdout


def test_the_config_the_readme_has_you_create_is_ignored_by_git() -> None:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "/config.yaml" in lines or "config.yaml" in lines


def test_skip_messages_and_the_readme_name_the_right_apt_packages() -> None:
    import shutil

    from .conftest import APT_PACKAGES

    readme = (ROOT / "README.md").read_text()
    apt_line = re.search(r"apt-get install ([a-z0-9 -]+)`", readme)
    assert apt_line is not None
    for tool in ("promtool", "prometheus-alertmanager", "redis-server", "docker-compose",
                 "wrk"):
        assert APT_PACKAGES[tool] in apt_line.group(1).split(), tool
    if shutil.which("dpkg") is None:
        return
    for tool, package in APT_PACKAGES.items():
        path = shutil.which(tool)
        if path is None:
            continue
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode == 0:  # else not from a Debian package here (pip, a tarball)
            assert owner.stdout.split(":")[0] == package, (tool, owner.stdout)
