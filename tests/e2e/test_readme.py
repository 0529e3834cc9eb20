"""The README's walk-through, run as written, against both stacks, twice in a row.

The commands are read out of README.md (the ``sh`` block under "A certificate by hand"),
not copied here: a change to the README that breaks them breaks this test. They run
under ``bash -e -o pipefail`` in an empty folder, with ``B`` (the gateway) and ``PW``
(the development password) set as a reader would set them for their own stack. The
second run finds the data of the first (the domain, the user) and must still end with
a verified chain.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import PASSWORD

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## A certificate by hand"


def walkthrough() -> str:
    """The shell commands of the README's walk-through."""
    text = README.read_text()
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, "the walk-through is one sh block"
    return blocks[0]


def test_the_walkthrough_is_found_and_defaults_to_make_run():
    script = walkthrough()
    assert "B=${B:-http://127.0.0.1:8080}" in script  # make run's (and make up's) gateway
    assert "openssl verify" in script


def run_walkthrough(base_url: str, folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir()
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", walkthrough()], cwd=folder,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder),
             "B": base_url, "PW": PASSWORD},
        capture_output=True, text=True, timeout=240, check=False)


def test_the_readme_walkthrough_works_as_written_twice(stack, tmp_path):
    for attempt in ("first", "second"):
        done = run_walkthrough(stack.base_url, tmp_path / attempt)
        assert done.returncode == 0, (
            f"{attempt} run exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}")
        assert "www-chain.pem: OK" in done.stdout, done.stdout[-3000:]
        assert re.search(r"order \S+: issued", done.stdout), done.stdout[-3000:]
        leaf, issuing = x509.load_pem_x509_certificates(
            (tmp_path / attempt / "www-chain.pem").read_bytes())
        root = x509.load_pem_x509_certificate((tmp_path / attempt / "root.pem").read_bytes())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["www.example.com"]
        assert leaf.issuer == issuing.subject and issuing.issuer == root.subject
        assert root.issuer == root.subject  # the self-signed root, from the public URL
