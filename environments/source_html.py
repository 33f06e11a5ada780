"""A revision's code as HTML for the revision panel: Pygments escapes every character of it."""

from __future__ import annotations

from pygments import highlight as _pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer


def highlight(code: str) -> str:
    """`code` as Pygments HTML: every character of the source is escaped, so it is safe to show."""
    return _pygments_highlight(code, PythonLexer(), HtmlFormatter(nowrap=False, cssclass="source"))


def highlight_css() -> str:
    """The stylesheet for `highlight()`'s markup."""
    return HtmlFormatter(style="default").get_style_defs(".source")
