"""The retrieval evaluation's report: one self-contained HTML file.

Tables of metrics and timings, matplotlib plots embedded as PNG data URIs, and strips of a query
with its top results embedded as JPEG thumbnails (a green frame marks a right result). Nothing
outside the file is referenced, so the report can be mailed or archived as it is.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)

THUMB = 112  # longest side of a thumbnail in the strips, in pixels


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list]  # cells: str, int, float (shown with 3 decimals) or None (shown as a dash)
    note: str = ""


@dataclass(frozen=True)
class Thumb:
    image: bytes | None  # JPEG bytes; None shows an empty frame
    caption: str
    right: bool | None = None  # True: a right result (green frame), False: wrong (red), None: the query


@dataclass(frozen=True)
class Strip:
    title: str
    query: Thumb
    results: list[Thumb]


@dataclass(frozen=True)
class Plot:
    caption: str
    png: bytes


@dataclass
class Report:
    title: str
    summary: list[str] = field(default_factory=list)  # short lines under the title
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    strips: dict[str, list[Strip]] = field(default_factory=dict)  # section heading -> strips


def thumbnail_jpeg(image: Image.Image, *, size: int = THUMB, box: Sequence[float] | None = None) -> bytes:
    """A small JPEG of ``image``; ``box`` (x0, y0, x1, y1) is outlined when given."""
    from PIL import ImageDraw

    im = image.convert("RGB")
    scale = size / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    else:
        scale = 1.0
    if box is not None:
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        ImageDraw.Draw(im).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 200, 0), width=2)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def curve_plot(curves: Mapping[str, Sequence[float]], ks: Sequence[int], *, ylabel: str, title: str) -> bytes:
    """A PNG of one line per system: a metric against the cut-off k."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (name, values) in enumerate(curves.items()):
        if len(values) != len(ks):
            raise ValueError(f"curve {name!r} has {len(values)} points for {len(ks)} cut-offs")
        ax.plot(list(ks), list(values), styles[(i // 10) % len(styles)], marker=".", label=name)
    ax.set_xlabel("k (results looked at)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        if len(row) != len(t.columns):
            raise ValueError(f"table {t.title!r}: row {row!r} has {len(row)} cells for {len(t.columns)} columns")
        cells = "".join(f"<td>{_cell(v)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (
        f"<h2>{html.escape(t.title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>\n{note}"
    )


def _thumb(t: Thumb) -> str:
    cls = "query" if t.right is None else ("right" if t.right else "wrong")
    img = (
        f'<img src="{_uri(t.image, "image/jpeg")}" alt="{html.escape(t.caption)}">'
        if t.image
        else '<div class="missing">no image</div>'
    )
    return f'<figure class="{cls}">{img}<figcaption>{html.escape(t.caption)}</figcaption></figure>'


def _strip(s: Strip) -> str:
    items = _thumb(s.query) + "".join(_thumb(r) for r in s.results)
    return f'<div class="strip"><h4>{html.escape(s.title)}</h4><div class="row">{items}</div></div>'


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead{background:#f3f3f3}
.note{color:#555;font-size:.9em;max-width:60em}
.strip .row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;width:120px;font-size:.7em;text-align:center;word-break:break-all}
figure img{max-width:112px;max-height:112px;border:3px solid #ccc}
figure.query img{border-color:#ffb000}
figure.right img{border-color:#1a9e3a}
figure.wrong img{border-color:#d03030}
.missing{width:112px;height:112px;background:#eee}
h4{margin:.8em 0 .2em}
.plots{display:flex;flex-wrap:wrap;gap:1em}
.plots figure{width:auto}
.plots figure img{max-width:640px;max-height:none;border:none}
"""


def render_html(report: Report) -> str:
    """The whole report as one HTML document (images inline as data URIs)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.summary:
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in report.summary) + "</ul>")
    parts.extend(_table(t) for t in report.tables)
    if report.plots:
        parts.append('<h2>Curves</h2><div class="plots">')
        for p in report.plots:
            parts.append(
                f'<figure class="plot"><img src="{_uri(p.png, "image/png")}" alt="{html.escape(p.caption)}">'
                f"<figcaption>{html.escape(p.caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    for heading, strips in report.strips.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.extend(_strip(s) for s in strips)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, out_dir: str | Path, *, name: str = "index.html") -> Path:
    """Write the report into ``out_dir`` (created) atomically; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(path)
    logger.info("wrote the report %s", path)
    return path
