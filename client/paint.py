"""Colours of the terminal client, through prompt_toolkit's formatted text: each line has a kind
(own, private, group, bcast, presence, error, info) and each kind its style class. The line is
rendered to escape sequences by prompt_toolkit's VT100 renderer and printed like any other text,
so it goes through `patch_stdout(raw=True)` above the input line.

No colour (plain text) when NO_COLOR is set to a non-empty value (https://no-color.org), on a dumb
terminal (TERM=dumb or unset) or when stdout is not a terminal. Text from other users is already
made safe by client.view (no control characters), so no escape sequence of theirs gets through.
"""

from __future__ import annotations

import io
import os
import sys

from prompt_toolkit.data_structures import Size
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.renderer import print_formatted_text as render
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import is_dumb_terminal

KINDS = ("own", "private", "group", "bcast", "presence", "error", "info")
"""The kinds of lines; each has its own style (`info` is left plain)."""

STYLE = Style.from_dict({
    "own": "ansigreen",
    "private": "ansimagenta bold",
    "group": "ansicyan bold",
    "bcast": "ansiyellow",
    "presence": "ansibrightblack italic",
    "error": "ansired bold",
    "info": "",
})

_enabled = False


def wanted() -> bool:
    """True when colours suit this process: NO_COLOR unset or empty, a terminal that is not dumb."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and not is_dumb_terminal()


def configure(enabled: bool | None = None) -> bool:
    """Turn colours on or off for `say` (None: as `wanted()` says). Returns the setting."""
    global _enabled
    _enabled = wanted() if enabled is None else enabled
    return _enabled


def paint(kind: str, text: str) -> str:
    """`text` with the escape sequences of style `kind` (one of KINDS) when colours are on, else
    `text` unchanged. Never ends with a newline."""
    if not _enabled or kind == "info" or not text:
        return text
    buf = io.StringIO()
    out = Vt100_Output(buf, lambda: Size(rows=24, columns=10_000), term=os.environ.get("TERM"))
    render(out, FormattedText([(f"class:{kind}", text)]), STYLE)
    out.reset_attributes()
    out.flush()
    return buf.getvalue()


def say(text: str, kind: str = "info") -> None:
    """Print one line (or several) of `kind`."""
    print("\n".join(paint(kind, line) for line in text.split("\n")), flush=True)
