"""Markdown to one self-contained HTML page (the report's ``--html``)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "line-height:1.4}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
        "#bbb;padding:3px 8px;text-align:left}th{background:#eee}img{max-width:100%}")


def markdown_to_html(text: str, base_dir: Path, title: str = "report") -> str:
    """Render Markdown (CommonMark + tables) to one HTML page, PNGs inlined as base64."""
    import html as html_mod

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(text)

    def inline(m: re.Match[str]) -> str:
        src = html_mod.unescape(m.group(1))
        p = Path(base_dir) / src
        if "/" in src or not src.endswith(".png") or not p.is_file():
            return m.group(0)
        data = base64.b64encode(p.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html_mod.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}"
            "</body></html>\n")
