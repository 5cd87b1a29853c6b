"""Which characters free text may hold: one rule for every name, pseudonym and comment a person types.

Why refuse instead of cleaning: text that was silently changed (a NUL dropped from a comment, a control
character turned into a space in a diagnosis name) is no longer what the person typed, and they may not find
it again under the name they remember; the README promises a 422. Controls are Unicode category ``Cc``:
C0 (U+0000–U+001F), DEL and C1 (U+0080–U+009F, e.g. U+0085 NEXT LINE). Multi-line text (comments) may hold
tab, line feed and carriage return (browsers send textarea line breaks as CR LF); one-line text none of them.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def has_controls(value: str, *, multiline: bool = False) -> bool:
    """True when ``value`` holds a control character it may not hold (see the module's rule)."""
    return (_CONTROLS_BUT_LINES if multiline else _CONTROLS).search(value) is not None
