"""The runbook, served at ``GET /runbook``: the package's runbook.md as one HTML page.

Every alert's ``runbook_url`` points at ``<web.external_url>/runbook#<alert name, lower
case>``, so the link in an SMS or a notification works wherever the exporter runs, with no
repository to reach. ``docs/runbook.md`` is the source; ``exporter/runbook.md`` is its copy
inside the package (tests/test_runbook.py keeps the two equal).

The Markdown is the small subset the runbook uses (headings, paragraphs, lists, code,
bold, links), rendered here rather than with a new dependency. Every heading gets the
anchor GitHub would give it, so the same ``#fragment`` works on GitHub and here.
"""

from __future__ import annotations

import functools
import html
import re
from importlib import resources

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _inline(text: str) -> str:
    """Escape ``text`` and render `code`, **bold** and [links](url) in it."""
    out: list[str] = []
    last = 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, bold, label, url = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        elif url.startswith(("http://", "https://", "#")):
            out.append(f'<a href="{html.escape(url)}">{_inline(label)}</a>')
        else:  # a page of the docs/ folder: not served here, so its name only
            out.append(f"{_inline(label)} (docs/{html.escape(url)})")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def render(markdown: str) -> str:
    """The runbook's Markdown as a complete HTML page."""
    body: list[str] = []
    paragraph: list[str] = []
    items: list[list[str]] = []  # the open list's items, each its lines
    in_code = False
    code: list[str] = []

    def close() -> None:
        if paragraph:
            body.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{_inline(' '.join(item))}</li>"
                                         for item in items) + "</ul>")
            items.clear()

    title = "Runbook"
    for line in markdown.splitlines():
        if line.startswith("```"):
            if in_code:
                body.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
                code.clear()
            else:
                close()
            in_code = not in_code
            continue
        if in_code:
            code.append(line)
            continue
        heading = re.match(r"(#{1,6}) (.+)", line)
        if heading:
            close()
            level, text = len(heading[1]), heading[2].strip()
            if level == 1:
                title = text
            body.append(f'<h{level} id="{slug(text)}">{_inline(text)}</h{level}>')
        elif line.startswith(("- ", "* ")):
            if paragraph:
                close()
            items.append([line[2:].strip()])
        elif not line.strip():
            close()
        elif items and line.startswith(" "):
            items[-1].append(line.strip())
        else:
            if items:
                close()
            paragraph.append(line.strip())
    close()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;"
            "padding:0 1em;line-height:1.5}code{background:#f3f3f3;padding:0 .2em}"
            "pre code{display:block;padding:.5em;overflow-x:auto}"
            "h2{border-top:1px solid #ddd;padding-top:1em}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


@functools.cache
def page() -> str:
    """The rendered runbook, read from the package once."""
    markdown = resources.files("exporter").joinpath("runbook.md").read_text(encoding="utf-8")
    return render(markdown)
