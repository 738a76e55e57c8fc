"""Type-check the generated Grafana dashboards against Grafana's own types (@grafana/schema).

    npm ci --prefix tools/grafana-schema   # once: typescript and @grafana/schema, pinned
    python3 tools/grafana_schema.py        # exit 0 when every dashboard type-checks

Each dashboard from grafana/build.py becomes a TypeScript constant of the type in
tools/grafana-schema/types.ts, once per pinned Grafana version (v10.4/ etc.; 10.4: the dashboards'
schemaVersion; 11.2: the compose stack's Grafana; 13.2: the latest), and one tsc run checks
them all: an unknown key, a misspelt option or a value outside an enum fails. tests/test_grafana.py
runs this in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tools" / "grafana-schema"
TSC = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
GENERATED = "check.gen.ts"
OPTIONS = ("--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module",
           "esnext", "--moduleResolution", "bundler", "--pretty", "false")


def versions() -> list[str]:
    """The version folders (v10.4: @grafana/schema 10.4.x), as the npm workspace lists them."""
    return list(json.loads((PACKAGE / "package.json").read_text())["workspaces"])


def installed() -> bool:
    """tsc is there, and each version folder resolves @grafana/schema to its own version."""
    return TSC.exists() and all(
        (_resolved(version) or "").startswith(version.removeprefix("v") + ".")
        for version in versions())


def _resolved(version: str) -> str | None:
    """The @grafana/schema version that tsc finds from a folder: its own node_modules first,
    then the one npm hoisted to the top."""
    for base in (PACKAGE / version, PACKAGE):
        path = base / "node_modules" / "@grafana" / "schema" / "package.json"
        if path.exists():
            return str(json.loads(path.read_text())["version"])
    return None


def source(dashboards: dict[str, object]) -> str:
    """types.ts plus one typed constant per dashboard, JSON indented so errors name a line."""
    lines = [(PACKAGE / "types.ts").read_text()]
    for index, (name, dashboard) in enumerate(sorted(dashboards.items())):
        lines.append(f"// {name}\nexport const dashboard{index}: TypedDashboard = "
                     f"{json.dumps(dashboard, indent=2, sort_keys=True)};\n")
    return "\n".join(lines)


def check(dashboards: dict[str, object]) -> list[str]:
    """tsc's errors, each with the offending line of the generated file; [] when clean."""
    files = []
    text = source(dashboards)
    for version in versions():
        path = PACKAGE / version / GENERATED
        path.write_text(text)
        files.append(path)
    run = subprocess.run(["node", str(TSC), *OPTIONS, *map(str, files)], cwd=PACKAGE,
                         capture_output=True, text=True, timeout=300, check=False)
    if run.returncode == 0:
        return []
    source_lines = text.splitlines()
    errors = []
    for line in (run.stdout + run.stderr).splitlines():
        match = re.match(r"(.+?)\((\d+),\d+\): ", line)
        if match and 0 < int(match.group(2)) <= len(source_lines):
            line += f"\n    > {source_lines[int(match.group(2)) - 1].strip()}"
        errors.append(line)
    return errors or [f"tsc exited {run.returncode}"]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from grafana import build  # needs ROOT on the path first

    if not installed():
        print(f"not installed: run npm ci --prefix {PACKAGE.relative_to(ROOT)}", file=sys.stderr)
        return 2
    errors = check(dict(build.dashboards()))
    for error in errors:
        print(error, file=sys.stderr)
    if not errors:
        print(f"dashboards type-check against @grafana/schema {', '.join(versions())}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
