"""Text that a user controls (config strings, file names, labels) made safe for where it lands.

Each sink has one helper, used everywhere that sink is written:

- `script_json`: JSON inside an HTML ``<script>`` element (the explorer's data block, the
  parameters that Snakemake's report writes into its ``<script id="results">`` block). The HTML
  parser ends a script element at ``</script`` and enters its "escaped" state at ``<!--``
  whatever the script's type, so no ``<``, ``>`` or ``&`` may appear raw; JSON can write them
  as ``\\u003c`` and so on, and ``JSON.parse`` / ``json.loads`` give back the same text.
- `mathtext_literal`: a string drawn by matplotlib, which typesets any text holding an even
  number of unescaped ``$`` as math (``$\\foo$.png`` fails to parse; ``price $5 or $6`` comes
  out in italics with the dollars gone).
- `terminal_text`: a string written to a console or log file, where escape codes recolour or
  erase the screen and a newline forges a line of its own.
"""

from __future__ import annotations

import json
import unicodedata

# Characters that JSON may hold raw inside strings but HTML's script parsing reacts to (and the
# two line separators that older JavaScript parsers refused inside string literals).
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
# Unicode categories of characters that act on a terminal instead of showing: controls
# (escape, newline, carriage return, backspace), formats (bidirectional overrides), separators,
# and the lone surrogates that stand for the undecodable bytes of a non-UTF-8 file name.
_TERMINAL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")


def script_json(data) -> str:
    """``data`` as compact JSON that can sit inside a ``<script>`` element of an HTML page.

    ``<``, ``>`` and ``&`` only ever occur inside JSON strings, so replacing them by their
    ``\\u`` escapes in the serialised text leaves the value unchanged.
    """
    text = json.dumps(data, separators=(",", ":"))
    for char, escape in _SCRIPT_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def mathtext_literal(text: str) -> str:
    """``text`` drawn as it is by matplotlib: every ``$`` escaped (``\\$``), so no span of it
    is typeset as math (matplotlib turns ``\\$`` back into ``$`` in plain text). Characters
    with no glyph (escape codes, line breaks) are shown as their escapes, as on a terminal."""
    return terminal_text(text).replace("$", r"\$")


def terminal_text(text: str) -> str:
    """``text`` with every character that would act on a terminal instead of showing (escape
    codes, newlines, carriage returns, bidirectional overrides) written as its Python escape
    (``\\x1b``, ``\\n``, ``\\u202e``), so a file name cannot recolour, erase or forge a line."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _TERMINAL_CATEGORIES else c for c in str(text))
