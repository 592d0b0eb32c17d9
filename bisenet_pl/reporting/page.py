"""Self-contained HTML: every picture embedded as a base64 PNG, no script, no network, opens from disk."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { background: #fff4e0; border-left: 4px solid #f0a020; padding: 6px 12px; margin: 8px 0; }
.note { color: #666; font-size: 13px; }
figure { display: inline-block; margin: 6px 8px 6px 0; vertical-align: top; max-width: 49%; }
figure.wide { display: block; max-width: 100%; }
#fig-confusion_matrix { max-width: 780px; }
figcaption { font-size: 12px; color: #555; }
img { max-width: 100%; }
code, pre { background: #f6f6f6; font-size: 12px; } pre { padding: 8px; white-space: pre-wrap; }
.failed { color: #b00020; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 2) -> str:
    """A table cell: the value shown with `digits` decimals, the full value in `data-value`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="num" data-value="">n/a</td>'
    return f'<td class="num" data-value="{float(value)!r}">{float(value):.{digits}f}</td>'


class Page:
    """Sections appended in order; `figure` embeds a PNG and writes it to `report/<name>.png`."""

    def __init__(self, title: str, figures_dir: Path) -> None:
        self.title = title
        self.figures_dir = figures_dir
        self.parts: list[str] = []
        self.figures: dict[str, Path] = {}

    def add(self, text: str) -> None:
        self.parts.append(text)

    def section(self, anchor: str, title: str) -> None:
        self.parts.append(f'<h2 id="{esc(anchor)}">{esc(title)}</h2>')

    def missing(self, text: str) -> None:
        self.parts.append(f'<p class="missing">{esc(text)}</p>')

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{esc(text)}</p>')

    def figure(self, name: str, png: bytes, caption: str, wide: bool = False) -> None:
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / f"{name}.png"
        path.write_bytes(png)
        self.figures[name] = path
        data = base64.b64encode(png).decode("ascii")
        wide_class = ' class="wide"' if wide else ""
        self.parts.append(
            f'<figure id="fig-{esc(name)}"{wide_class}>'
            f'<img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)} (<code>{esc(self.figures_dir.name)}/{esc(name)}.png</code>)"
            "</figcaption></figure>"
        )

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "") -> None:
        """`rows` hold ready cells (`<td>...</td>`, e.g. from `number`) or plain text (escaped)."""
        ident = f' id="{esc(table_id)}"' if table_id else ""
        out = [f"<table{ident}><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
        for row in rows:
            cells = [c if c.startswith("<td") else f"<td>{esc(c)}</td>" for c in row]
            out.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append("".join(out) + "</table>")

    def html(self) -> str:
        body = "\n".join(self.parts)
        return (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(self.title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{esc(self.title)}</h1>\n{body}\n</body></html>\n"
        )
