"""The password policy: length, the common list, patterns, one's own names."""

from __future__ import annotations

import pytest
from chancery_identity.passwords import Passwords, common_passwords, policy_problem
from chancery_identity.testing import API

# (password, e-mail, account name, the reason given, or None when accepted)
POLICY = [
    ("quiet-lantern-harbour", "lee@example.com", "Example Corp", None),
    ("Tr0ub4dor&3-zebra", "lee@example.com", "Example Corp", None),
    ("granite meadow falcon", None, None, None),
    ("日本語のパスワードです長い", None, None, None),  # length counts characters
    ("x9-k2#", None, None, "at least 12"),
    ("elevenchars", None, None, "at least 12"),
    ("y" * 1025, None, None, "at most 1024"),
    ("passwordpassword", None, None, "most commonly used"),
    ("Password1234!", None, None, "most commonly used"),
    ("P@ssw0rd-1234", None, None, "most commonly used"),
    ("iloveyou12345", None, None, "most commonly used"),
    ("Summer2024!!", None, None, "most commonly used"),
    ("aaaaaaaaaaaaaaaa", None, None, "too few different characters"),
    ("abababab1212", None, None, "too few different characters"),
    ("k9#Lm2k9#Lm2", None, None, "repeated"),
    ("zx81-Qv!zx81-Qv!", None, None, "repeated"),
    ("1q2w3e4r5t6y7u", None, None, "keyboard pattern"),
    ("mnbvcxzlkjhgfdsa", None, None, "keyboard pattern"),
    ("abcdefghijklmnop", None, None, "keyboard pattern"),
    ("9876543210zyxw", None, None, "keyboard pattern"),
    ("qwerty-asdfgh-zxcvbn", None, None, "keyboard pattern"),
    ("jane.doe-lantern-77", "jane.doe@example.com", None, "e-mail address"),
    ("JANEDOE/harbour/88", "jane.doe@example.com", None, "e-mail address"),
    ("lee-lantern-harbour", "lee@example.com", None, None),  # too short a name to judge
    ("examplecorp-lantern", "lee@example.com", "Example Corp", "account's name"),
    ("Example Corp harbour", "lee@example.com", "Example Corp", "account's name"),
]


@pytest.mark.parametrize("password, email, account, reason", POLICY)
def test_password_policy(password, email, account, reason):
    problem = policy_problem(password, email=email, account_name=account)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem


def test_the_bundled_list_holds_hundreds_of_long_common_passwords():
    common = common_passwords()
    assert len(common) >= 300
    assert all(len(p) >= 12 for p in common)
    assert "password1234" in common and "qwertyuiop123" in common


@pytest.mark.parametrize("path, field, body", [
    ("/users", "password", {"email": "n@example.com", "name": "N", "role": "limited",
                            "password": "password1234"}),
    ("/accounts", "admin_password", {"name": "Initech", "admin_email": "b@initech.com",
                                     "admin_name": "Bill", "admin_password": "initech-2024"}),
    ("/me/password", "new_password", {"current_password": "quiet-lantern-harbour",
                                      "new_password": "qwertyuiop123"}),
])
def test_every_way_to_set_a_password_applies_the_policy(client, login, path, field, body):
    who = "operator@chancery.local" if path == "/accounts" else "admin@example.com"
    r = client.post(f"{API}{path}", headers=login(client, who), json=body)
    assert r.status_code == 422
    assert field in r.get_json()["errors"], r.get_json()


def test_the_fast_profile_is_a_test_setting_and_hashes_are_argon2id():
    production = Passwords()
    assert production._hasher.memory_cost >= 64 * 1024 and production._hasher.time_cost >= 2
    fast = Passwords("fast")
    hashed = fast.hash("granite meadow falcon")
    assert hashed.startswith("$argon2id$") and fast.verify(hashed, "granite meadow falcon")
    assert production.needs_rehash(hashed)  # moving to real parameters rehashes on sign-in
    with pytest.raises(ValueError):
        Passwords("none")
