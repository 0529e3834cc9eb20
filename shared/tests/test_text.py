"""Display names: what could disguise the text around a name is refused, with the reason."""

from __future__ import annotations

import pytest
from chancery_shared.text import DisplayName, checked_display_name, display_name_problem
from chancery_shared.web.problems import InvalidField
from marshmallow import Schema, ValidationError, fields


@pytest.mark.parametrize("char", [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # embeddings and overrides
    "\u2066", "\u2067", "\u2068", "\u2069",  # isolates
    "\u200e", "\u200f", "\u061c",  # direction marks
    "\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b",  # C0, DEL, C1
    "\u2028", "\u2029",  # line and paragraph separators
    "\u200b", "\u2060", "\ufeff", "\u00ad",  # invisible: zero-width space, joiner, BOM
    "\ue000", "\ufdd0", "\uffff", "\U000e0041",  # private use, noncharacters, a tag
])
def test_control_and_invisible_formatting_characters_are_refused(char):
    problem = display_name_problem(f"Ann{char}Lee")
    assert problem and f"U+{ord(char):04X}" in problem


@pytest.mark.parametrize("name", [
    "Zoë Ñúñez-O'Brien", "محمد علي", "李小龙", "राम", "Émile & Søn (EMEA) #2",
    "👩\u200d💻 Platform", "می\u200cخواهم",  # the joiners emoji and Persian need
    "Ann\u00a0Lee",  # a no-break space is a space
])
def test_names_in_any_script_are_accepted(name):
    assert display_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "   ", "\u3000"])
def test_a_blank_name_is_refused(name):
    assert display_name_problem(name) == "must not be blank"


def test_the_problem_names_the_character():
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in display_name_problem("a\u202eb")
    assert "U+001B a control character" in display_name_problem("a\x1bb")


def test_checked_display_name_strips_or_raises_naming_the_field():
    assert checked_display_name("name", "  Ann Lee ") == "Ann Lee"
    with pytest.raises(InvalidField) as refused:
        checked_display_name("admin_name", "Ann\u2067Lee")
    assert list(refused.value.errors) == ["admin_name"]
    assert refused.value.status == 422


def test_the_marshmallow_validator_names_the_field():
    class Named(Schema):
        name = fields.String(validate=DisplayName())

    assert Named().load({"name": "Ann Lee"}) == {"name": "Ann Lee"}
    with pytest.raises(ValidationError) as refused:
        Named().load({"name": "Ann\u202eLee"})
    assert list(refused.value.messages) == ["name"]
