"""The HTML helpers behind every page ibscope writes: a run's ``report.html`` and the claims' ``index.html``.

Every value that comes from data (a results table, a settings file, a
``verdict.json``, a file name in a run directory) goes through
:func:`escape`; only :class:`Markup` (fragments these helpers built from
escaped parts, or ibscope's own literal HTML) is inserted as is. Figures
are embedded only from regular PNG files (:func:`png_bytes`: never through
a symbolic link, whose target could be any file of the user), and links
point only inside the directory of the page (:func:`href`). The module
imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

__all__ = ["Markup", "Cell", "escape", "page", "paragraphs", "table", "dataframe_table", "png_bytes", "figure",
           "embedded_image", "href", "link", "linked_figure", "definition", "PNG_SIGNATURE", "REPORT_STYLE", "CATALOGUE_STYLE"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REPORT_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
                "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;"
                "text-align:right}img{max-width:100%}figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;"
                "overflow-x:auto}caption{caption-side:top;text-align:left;font-style:italic;padding:4px 0}")
CATALOGUE_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
                   "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
                   "img{max-width:100%}")


class Markup(str):
    """A trusted HTML fragment: :func:`escape` and the helpers insert it unchanged.

    Build one only from literal HTML or from parts that went through
    :func:`escape`; anything read from a file is data, never Markup.
    """

    __slots__ = ()


def escape(value: Any) -> Markup:
    """``value`` as HTML text: ``str(value)`` with ``& < > " '`` escaped; a :class:`Markup` unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


@dataclass(frozen=True)
class Cell:
    """A table cell with attributes: ``content`` (escaped unless Markup), ``colspan`` and a text ``color``."""

    content: Any = ""
    colspan: int | None = None
    color: str | None = None

    def render(self, tag: str = "td") -> str:
        attrs = ""
        if self.colspan is not None:
            attrs += f" colspan={int(self.colspan)}"
        if self.color is not None:
            attrs += f" style='color:{escape(self.color)}'"
        return f"<{tag}{attrs}>{escape(self.content)}</{tag}>"


def paragraphs(text: str) -> list[Markup]:
    """Plain ``text`` as escaped ``<p>`` paragraphs (blank lines separate them)."""
    return [Markup(f"<p>{escape(p.strip())}</p>") for p in str(text).split("\n\n") if p.strip()]


def page(title: str, parts: Iterable[str], *, heading: str | None = None, heading_html: str | None = None,
         style: str = REPORT_STYLE) -> str:
    """A whole self-contained HTML page.

    Parameters
    ----------
    title : str
        The page title (escaped); also the ``<h1>`` unless ``heading`` or ``heading_html`` is given.
    parts : iterable of str
        The body: fragments built by these helpers (inserted as is, one a line).
    heading : str, optional
        A plain-text ``<h1>`` (escaped) other than the title.
    heading_html : str, optional
        A trusted HTML top heading (ibscope's own fragment).
    style : str
        The CSS of the page (:data:`REPORT_STYLE` or :data:`CATALOGUE_STYLE`).
    """
    top = heading_html if heading_html is not None else f"<h1>{escape(heading if heading is not None else title)}</h1>"
    return "\n".join(["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{escape(title)}</title>",
                      f"<style>{style}</style>", "</head><body>", top, *parts, "</body></html>"])


def table(rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None, *, caption: str = "") -> Markup:
    """An HTML table; every cell escaped unless it is :class:`Markup` (or a :class:`Cell` of Markup).

    Parameters
    ----------
    rows : iterable of sequences
        The cells of each row: values (shown with ``str``), :class:`Markup` or :class:`Cell`.
    header : sequence, optional
        The header cells.
    caption : str
        A plain-text caption (escaped).
    """
    def cells(row: Sequence[Any], tag: str) -> str:
        return "".join((c if isinstance(c, Cell) else Cell(c)).render(tag) for c in row)

    out = ["<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    if header is not None:
        out.append(f"<tr>{cells(header, 'th')}</tr>")
    out += [f"<tr>{cells(r, 'td')}</tr>" for r in rows]
    out.append("</table>")
    return Markup("\n".join(out))


def dataframe_table(df: Any, caption: str = "") -> Markup:
    """A DataFrame as an HTML table (4 significant digits, NaN as blank, every cell and header escaped)."""
    out = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", escape=True)
    if caption:
        out = out.replace(">", f"><caption>{escape(caption)}</caption>", 1)
    return Markup(out)


def png_bytes(path: str | Path) -> bytes:
    """The bytes of a regular PNG file; b'' for a missing file, a symbolic link, or anything that is not a PNG."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return b""
    data = path.read_bytes()
    return data if data.startswith(PNG_SIGNATURE) else b""


def figure(path: str | Path, *, caption: str | None = None, alt: str | None = None) -> Markup:
    """A PNG file embedded (base64) as a ``<figure>`` ('' if the file is missing).

    The caption and alternative text default to the file name. A symbolic
    link or a file that is not a PNG gives a note instead of its bytes.
    """
    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        return Markup("")
    data = png_bytes(path)
    if not data:
        return Markup(f"<p><i>Figure {escape(path.name)} not shown: it is not a PNG file that ibscope wrote "
                      f"(a link or another kind of file).</i></p>")
    caption = path.name if caption is None else caption
    return Markup(f'<figure><img alt="{escape(path.name if alt is None else alt)}" '
                  f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}"/>'
                  f"<figcaption>{escape(caption)}</figcaption></figure>")


def embedded_image(path: str | Path, alt: str) -> Markup:
    """A bare ``<img>`` of a regular PNG file, embedded (base64); '' for a missing file, a link or a non-PNG."""
    data = png_bytes(path)
    if not data:
        return Markup("")
    return Markup(f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}'/>")


def href(target: str | PurePosixPath, *, what: str = "link") -> Markup:
    """``target`` as an escaped relative URL that stays inside the page's directory.

    Raises
    ------
    ValueError
        If ``target`` is empty, absolute, or climbs out with ``..``.
    """
    text = str(target)
    parts = PurePosixPath(text).parts
    if (not parts or text != text.strip() or text.startswith(("/", "\\")) or PurePosixPath(text).is_absolute()
            or Path(text).is_absolute() or ".." in parts or ".." in Path(text).parts or ":" in parts[0]):
        raise ValueError(f"The {what} {text!r} does not point inside the page's directory (it must be a relative "
                         f"path without '..').")
    return escape(quote(text, safe="/"))


def link(target: str | PurePosixPath, text: Any, *, what: str = "link") -> Markup:
    """``<a href='target'>text</a>`` with ``target`` checked by :func:`href` and ``text`` escaped."""
    return Markup(f"<a href='{href(target, what=what)}'>{escape(text)}</a>")


def linked_figure(target: str | PurePosixPath, alt: Any, caption: Any) -> Markup:
    """A ``<figure>`` that shows the image at the relative URL ``target`` (checked by :func:`href`), lazily."""
    return Markup(f"<figure><img alt='{escape(alt)}' src='{href(target, what='figure')}' loading='lazy'/>"
                  f"<figcaption>{escape(caption)}</figcaption></figure>")


def definition(label: str, value: Any) -> Markup:
    """``<p><b>label:</b> value</p>`` with ``value`` escaped unless Markup (``label`` is ibscope's own text)."""
    return Markup(f"<p><b>{escape(label)}:</b> {escape(value)}</p>")

