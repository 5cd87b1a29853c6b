"""Which characters free text may hold: one rule for every name, pseudonym and comment a person types.

Why refuse instead of cleaning: text that was silently changed (a NUL dropped from a comment, a control
character turned into a space in a diagnosis name) is no longer what the person typed, and they may not find
it again under the name they remember; the README promises a 422. Controls are Unicode category ``Cc``:
C0 (U+0000–U+001F), DEL and C1 (U+0080–U+009F, e.g. U+0085 NEXT LINE). Multi-line text (comments) may hold
tab, line feed and carriage return (browsers send textarea line breaks as CR LF); one-line text none of them.

The bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) count as controls too: a
right-to-left override makes a pseudonym or diagnosis name *display* as other text than it holds ("Trojan
Source", CVE-2021-42574), and such names are shown to other clinicians (similar patients, studies). The plain
direction marks (U+200E, U+200F, U+061C) stay allowed: right-to-left scripts need them and they reorder nothing.
"""

from __future__ import annotations

import re

_BIDI = "\u202a-\u202e\u2066-\u2069"
_CONTROLS = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI}]")
_CONTROLS_BUT_LINES = re.compile(f"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{_BIDI}]")


def has_controls(value: str, *, multiline: bool = False) -> bool:
    """True when ``value`` holds a control character it may not hold (see the module's rule)."""
    return (_CONTROLS_BUT_LINES if multiline else _CONTROLS).search(value) is not None
