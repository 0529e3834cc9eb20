"""Debian's weak keys (CVE-2008-0166), read from lists in the openssl-blacklist format."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
from chancery_shared import config as cfg
from chancery_shared.subscriber_keys import (
    KeyRefused,
    check_subscriber_key,
    debian_fingerprint,
    load_debian_weak_keys,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.lru_cache(maxsize=2)
def key(index: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_list(folder, *moduli: int, name: str = "blacklist.RSA-2048") -> str:
    folder.mkdir(exist_ok=True)
    lines = ["# generated for the tests"] + [debian_fingerprint(n) for n in moduli]
    (folder / name).write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_fingerprint_is_openssl_vulnkeys(tmp_path):
    """openssl-vulnkey hashes what `openssl rsa -modulus` prints; ours must match it."""
    import hashlib

    pem = key(0).public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    printed = subprocess.run(["openssl", "rsa", "-pubin", "-modulus", "-noout"], input=pem,
                             capture_output=True, check=True).stdout
    assert printed.startswith(b"Modulus=")
    assert debian_fingerprint(key(0).public_key().public_numbers().n) == \
        hashlib.sha1(printed).hexdigest()[20:]


def test_a_listed_key_is_refused_and_others_pass(tmp_path):
    listed, other = key(0).public_key(), key(1).public_key()
    lists = load_debian_weak_keys(write_list(tmp_path / "lists", listed.public_numbers().n))
    with pytest.raises(KeyRefused) as refused:
        check_subscriber_key(listed, debian_weak_keys=lists)
    assert refused.value.rule == "debian_weak" and refused.value.weak
    assert "CVE-2008-0166" in refused.value.reason
    assert check_subscriber_key(other, debian_weak_keys=lists) == "RSA 2048"
    assert check_subscriber_key(listed) == "RSA 2048"  # without the lists: not checked


def test_a_list_counts_only_for_its_key_size(tmp_path):
    n = key(0).public_key().public_numbers().n
    lists = load_debian_weak_keys(write_list(tmp_path / "l", n, name="blacklist.RSA-4096"))
    assert n not in lists


@pytest.mark.parametrize(("setup", "words"), [
    (lambda folder: None, "is not a directory"),
    (lambda folder: folder.mkdir(), "holds no blacklist.RSA-<bits> file"),
    (lambda folder: (folder.mkdir(), (folder / "blacklist.RSA-2048").write_text(
        "# ok\nnot-a-fingerprint\n")), "blacklist.RSA-2048 line 2"),
])
def test_a_bad_setting_stops_the_start_naming_the_variable(tmp_path, setup, words):
    folder = tmp_path / "lists"
    setup(folder)
    with pytest.raises(cfg.ConfigError) as refused:
        cfg.load(cfg.PlatformSettings, {"CHANCERY_WEAK_KEY_LISTS": str(folder)})
    assert words in refused.value.problems["CHANCERY_WEAK_KEY_LISTS"]


def test_the_platform_setting_loads_the_lists(tmp_path):
    n = key(0).public_key().public_numbers().n
    folder = write_list(tmp_path / "lists", n)
    platform = cfg.load(cfg.PlatformSettings, {"CHANCERY_WEAK_KEY_LISTS": folder})
    assert n in platform.debian_weak_keys
    assert "RSA-2048: 1" in platform.debian_weak_keys.describe()
    assert cfg.load(cfg.PlatformSettings, {}).debian_weak_keys is None
