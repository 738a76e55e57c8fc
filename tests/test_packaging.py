"""Packaging: the wheel and sdist build, carry what users need, and install and run cleanly.

Builds once per module with ``python -m build`` (the real PEP 517 path pip and CI use), then
installs the wheel into one fresh virtualenv, with its dependencies from the package index.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from exporter import __version__

from .conftest import ROOT, free_port

DIST_NAME = "signalwire_exporter"


def run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No --sdist/--wheel: build makes the sdist, then the wheel *from the sdist*, which
    # proves the sdist is complete enough to build from.
    result = run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Deprecation notices are how a build stops working next year: keep them at zero.
    assert "deprecated" not in (result.stdout + result.stderr).lower()
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return dist / f"{DIST_NAME}-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv with only the wheel (and its dependencies) installed."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    result = run(bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check",
                 "-q", wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    return bin_dir


def test_both_distributions_carry_the_one_version(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"{DIST_NAME}-{__version__}-py3-none-any.whl", f"{DIST_NAME}-{__version__}.tar.gz"]


def test_wheel_holds_the_package_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{DIST_NAME}-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    modules = {f"exporter/{p.name}" for p in (ROOT / "exporter").glob("*.py")}
    assert modules <= names
    assert "exporter/runbook.md" in names  # GET /runbook serves it
    assert not any(name.startswith("tests/") for name in names)
    assert "signalwire-exporter = exporter.cli:main" in entry_points
    assert f"Version: {__version__}" in metadata
    assert "Requires-Python: >=3.11" in metadata


def tracked_files() -> set[str]:
    result = run("git", "ls-files", cwd=ROOT)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return set(result.stdout.split())


def test_sdist_holds_everything_users_deploy_with(dist: Path) -> None:
    prefix = f"{DIST_NAME}-{__version__}/"
    with tarfile.open(dist / f"{DIST_NAME}-{__version__}.tar.gz") as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    # Everything in the repository except CI and editor plumbing (dot files) and benchmarks.
    wanted = {path for path in tracked_files()
              if not path.startswith((".ci/", "bench/", ".benchmarks/", ".gitignore"))}
    assert wanted - names == set()
    for path in ("config.example.yaml", "CHANGELOG.md", "Dockerfile", "deploy/compose.yaml"):
        assert path in names


def test_installed_command_runs(installed: Path) -> None:
    command = installed / "signalwire-exporter"
    help_result = run(command, "--help")
    assert help_result.returncode == 0, help_result.stderr
    assert "check-config" in help_result.stdout
    version = run(command, "--version")
    assert version.stdout.strip() == f"signalwire-exporter {__version__}"


def test_installed_command_checks_the_example_config(installed: Path) -> None:
    result = run(installed / "signalwire-exporter", "check-config",
                 "--config", ROOT / "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_installed_exporter_serves_outside_the_checkout(installed: Path,
                                                        tmp_path: Path) -> None:
    # From an empty directory, so the wheel's copy of the package is the one imported.
    import time
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    process = subprocess.Popen(
        [installed / "signalwire-exporter", "--listen-address", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=2) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.1)
        assert f'signalwire_exporter_build_info{{version="{__version__}"}} 1.0'.encode() in body
    finally:
        process.terminate()
        assert process.wait(30) == 0
        assert process.stderr is not None
        process.stderr.close()
