"""Parsers of docs/protocol.md for the tests that pin the code to it: the sections, the reply tables
of 6.1 and 6.2, the literal request examples of section 5 and the example session.

Every test that reads docs/protocol.md goes through this module. The file is read once, on first
use (so importing this module works without it; tests that need it skip on `not DOC.exists()`).
Pure: no zmq, no sockets.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
"""The protocol specification."""

TYPE_WORDS = "int|str|bool|float|array|object"
"""The type words the doc writes after a field name ("`seq` int")."""
FIELD = re.compile(rf"`(\w+)` ({TYPE_WORDS})\b")
"""One "`name` type" of the doc: groups (field name, type word)."""


@functools.cache
def doc_text() -> str:
    """The whole of docs/protocol.md (UTF-8). Raises FileNotFoundError without it."""
    return DOC.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the docs section whose heading line is `title` (e.g. "### 6.1 Ok reply fields"),
    up to the next heading. Raises ValueError when no line is `title`."""
    text = doc_text()
    start = text.index(f"\n{title}\n") + len(title) + 2
    end = text.find("\n#", start)
    return text[start:end if end >= 0 else len(text)]


def doc_fields(text: str) -> dict[str, str]:
    """Field name -> doc type word of every "`name` type" in `text`; `{...}` groups (the fields of
    nested objects, such as send's busy entries) left out."""
    return {name: kind for name, kind in FIELD.findall(re.sub(r"\{[^{}]*\}", "", text))}


def ok_table() -> dict[str, str]:
    """Request word -> the cell of its row in the table of 6.1 (str, as written)."""
    rows = {}
    for line in section("### 6.1 Ok reply fields").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def documented_reply_fields() -> dict[str, set[str]]:
    """docs/protocol.md 6.1: request word -> the names of the ok reply fields its row lists (besides
    req and status; the fields of nested objects left out)."""
    return {word: set(doc_fields(cell)) for word, cell in ok_table().items()}


def common_keys(line_start: str) -> list[str]:
    """The keys of the body shown in section 6 on the bullet starting with `line_start` ("* ok:").
    Raises StopIteration when no line starts so."""
    line = next(ln for ln in section("## 6. Replies").splitlines() if ln.startswith(line_start))
    return re.findall(r'"(\w+)":', line)


def spec_request_examples() -> list[tuple[bytes, dict]]:
    """docs/protocol.md section 5, "Literal examples (one per type)": (type, body) per line."""
    text = doc_text()
    block = text[text.index("Literal examples (one per type):"):text.index("## 6. Replies")]
    return [(kind.encode(), json.loads(obj)) for kind, obj in re.findall(r'^\[b"(\w+)",\s+(\{.*\})\]$', block, re.M)]


def spec_session() -> list[tuple[str, bytes, dict]]:
    """The example session of docs/protocol.md: (direction C>, <C or <S; frame 0; body) per message,
    bodies that continue on indented lines joined."""
    text = doc_text()
    start = text.index('C> [b"hello"')
    out, current = [], None
    for line in text[start:text.index("```", start)].splitlines():
        entry = re.match(r'^(?:B  )?(C>|<C|<S) \[b"([^"]+)", (.*)$', line)
        if entry:
            current = list(entry.groups())
        elif current is not None and line.startswith(" "):
            current[2] += line.strip()
        else:
            continue
        try:
            obj = json.loads(current[2].rstrip()[:-1])  # without the closing ]
        except json.JSONDecodeError:
            continue  # the body goes on on the next line
        out.append((current[0], current[1].encode(), obj))
        current = None
    return out
