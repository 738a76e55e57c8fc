"""Print docs/configuration.md: every config key, its default and meaning, from the example.

    python3 tools/config_docs.py > docs/configuration.md

config.example.yaml is the one place a key is documented (tests/test_config.py holds it equal
to the built-in defaults); this turns its comments into a reference table, and
tests/test_docs.py fails when the committed page is out of date.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?:\s+(?P<value>\S.*))?$")

INTRO = """\
# Configuration reference

<!-- Generated from config.example.yaml by tools/config_docs.py; do not edit: change the
     comments in config.example.yaml and run
     python3 tools/config_docs.py > docs/configuration.md -->

Every key has a default, so a file needs only the keys you change, and no file at all runs on
the defaults. Give the file with `--config FILE` or `SIGNALWIRE_EXPORTER_CONFIG=FILE`; check it
with `signalwire-exporter check-config --config FILE`. Any string may use `${ENV_VAR}` or
`${ENV_VAR:-fallback}`, so secrets come from the environment, not the file.
`config.example.yaml` holds the same keys and defaults as YAML to copy from.
"""


@dataclass
class Key:
    path: str
    default: str | None  # None for a section (a mapping)
    comment: list[str] = field(default_factory=list)


def parse_example(text: str) -> list[Key]:
    """Keys in file order, each with the comment lines written just above it."""
    keys: list[Key] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
        elif stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        elif match := _KEY.match(line):
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([*(name for _, name in stack), match["key"]])
            keys.append(Key(path, match["value"], comment))
            if match["value"] is None:
                stack.append((indent, match["key"]))
            comment = []
        elif stripped.startswith("- ") and keys:
            # a block-style list: the key above is a leaf after all, not a section
            last = keys[-1]
            if last.default is None and stack and stack[-1][1] == last.path.rpartition(".")[2]:
                stack.pop()
            items = [] if last.default is None else [last.default.strip("[]")]
            last.default = "[" + ", ".join([*items, stripped[2:]]) + "]"
        else:
            raise ValueError(f"config.example.yaml: cannot read line {line!r}")
    return keys


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(text: str) -> str:
    out = [INTRO]
    rows: list[str] = []

    def flush() -> None:
        if rows:
            out.extend(["| key | default | meaning |", "| --- | --- | --- |", *rows, ""])
            rows.clear()

    for key in parse_example(text):
        if key.default is None:
            flush()
            out.append(f"## `{key.path}`\n")
            if key.comment:
                out.append(" ".join(key.comment) + "\n")
        else:
            rows.append(f"| `{key.path}` | `{_cell(key.default)}` | "
                        f"{_cell(' '.join(key.comment))} |")
    flush()
    return "\n".join(out)


def main() -> int:
    sys.stdout.write(render(EXAMPLE.read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
