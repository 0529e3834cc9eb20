"""Text that people type and other people read: names of people, organizations, units.

Such a name ends up in audit descriptions, e-mails, CSV exports and the portal. Control
characters (line breaks, escape sequences) and invisible formatting characters — above
all the bidirectional overrides and isolates (U+202A..U+202E, U+2066..U+2069) and the
direction marks (U+200E, U+200F, U+061C) — let a name disguise the text around it:
``"Mallory\u202e nimda"`` shows as something else entirely. They have no place in a
name, so they are refused, never silently removed (a silently changed name is another
surprise).

Allowed are all letters, marks, digits, punctuation, symbols and ordinary spaces of any
script, and the two joiners that some scripts and emoji need (U+200C ZERO WIDTH
NON-JOINER, U+200D ZERO WIDTH JOINER).
"""

from __future__ import annotations

import unicodedata

from marshmallow import ValidationError
from marshmallow.validate import Validator

# Unicode general categories never acceptable in a display name: controls, format
# characters (bidi controls, zero-width space, BOM, soft hyphen, tags…), surrogates,
# private use, and the line and paragraph separators
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
JOINERS = frozenset({"\u200c", "\u200d"})


def _refused(char: str) -> bool:
    if char in JOINERS:
        return False
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:  # noncharacters
        return True
    return unicodedata.category(char) in REFUSED_CATEGORIES


def describe_char(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``: how a refused character is named to people."""
    name = unicodedata.name(char, "") or {
        "Cc": "a control character", "Cs": "a surrogate", "Co": "a private-use character",
    }.get(unicodedata.category(char), "a noncharacter")
    return f"U+{ord(char):04X} {name}"


def display_name_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable as a display name, or None when it is."""
    if not value.strip():
        return "must not be blank"
    for char in value:
        if _refused(char):
            return (f"contains {describe_char(char)}; control and invisible formatting "
                    "characters are not allowed in names")
    return None


class DisplayName(Validator):
    """marshmallow validator: the field is refused (422 naming it) with the reason."""

    def __call__(self, value: str) -> str:
        problem = display_name_problem(value)
        if problem:
            raise ValidationError(problem)
        return value

    def _repr_args(self) -> str:
        return ""


DESCRIPTION = ("no control characters, bidirectional or other invisible formatting "
               "characters (U+200C and U+200D excepted), not blank")


def checked_display_name(field: str, value: str) -> str:
    """``value`` without surrounding spaces; 422 naming ``field`` when it is not acceptable
    (for names that do not come through a schema: command lines, events, other callers)."""
    from chancery_shared.web.problems import InvalidField

    problem = display_name_problem(value)
    if problem:
        raise InvalidField(field, problem)
    return value.strip()
