"""Host names as a publicly trusted CA must treat them: normalised, public, registrable.

Every name a customer types (a domain to validate, an order's common name and SANs)
goes through :func:`normalise`: lower case, the trailing dot dropped, internationalised
labels turned into punycode (IDNA 2008 with UTS #46 mapping), and then refused unless
it is a public DNS name under a suffix of the Public Suffix List's ICANN section.
IP addresses, single labels, ``localhost`` and the reserved or internal TLDs are
refused: the Baseline Requirements forbid them in publicly trusted certificates.

orders applies it to every name a customer asks for; ca-signer applies
:func:`check_public_url` to the base of the CRL, OCSP and caIssuers URLs it writes into
public certificates, which relying parties everywhere must be able to reach.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit

import idna
from publicsuffixlist import PublicSuffixList

MAX_NAME_LENGTH = 253
# Reserved by RFC 2606 / RFC 6761 / RFC 6762 / RFC 7686 / ICANN, or special-use
# infrastructure: never a subscriber's public name.
RESERVED_TLDS = frozenset({"local", "localhost", "test", "example", "invalid", "internal",
                           "onion", "arpa", "alt", "home", "lan", "corp", "intranet",
                           "private"})
# RFC 2606 section 3: second-level names reserved for documentation (fine as stand-ins
# for a subscriber's domain in examples; never the address of a real CA's services).
DOCUMENTATION_DOMAINS = frozenset({"example.com", "example.net", "example.org"})
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class NameRejected(ValueError):
    """A name is not acceptable; the message is safe to show to the customer."""


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    # ICANN section only (BR "Base Domain"); unknown TLDs are not public names.
    return PublicSuffixList(accept_unknown=False, only_icann=True)


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def base_of(name: str) -> str:
    """The name a wildcard stands under (``*.example.com`` -> ``example.com``)."""
    return name[2:] if is_wildcard(name) else name


def normalise(raw: str, *, allow_wildcard: bool = False) -> str:
    """The canonical ASCII form of ``raw``, or :class:`NameRejected` saying why not."""
    if not isinstance(raw, str) or not raw.strip():
        raise NameRejected("must be a host name")
    name = raw.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if _is_ip_address(name):
        raise NameRejected(f"{raw.strip()} is an IP address; only public host names are allowed")
    wildcard = is_wildcard(name)
    if "*" in name and not wildcard:
        raise NameRejected(f"{raw.strip()}: a wildcard must be the whole leftmost label (*.)")
    if wildcard and not allow_wildcard:
        raise NameRejected(f"{raw.strip()} is a wildcard, which is not allowed here")
    host = _to_ascii(base_of(name), raw.strip())
    _check_public(host, raw.strip())
    return f"*.{host}" if wildcard else host


def registrable_domain(name: str) -> str:
    """The base domain (one label under the public suffix) of a normalised name."""
    host = base_of(name)
    return _suffixes().privatesuffix(host) or host


def _is_ip_address(name: str) -> bool:
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _to_ascii(host: str, shown: str) -> str:
    try:
        ascii_host = idna.encode(host, uts46=True, std3_rules=True,
                                 transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise NameRejected(f"{shown} is not a valid host name ({_idna_reason(exc)})") from exc
    except UnicodeError as exc:
        raise NameRejected(f"{shown} is not a valid host name") from exc
    if len(ascii_host) > MAX_NAME_LENGTH:
        raise NameRejected(f"{shown} is longer than {MAX_NAME_LENGTH} characters")
    if not all(_LDH_LABEL.match(label) for label in ascii_host.split(".")):
        raise NameRejected(f"{shown} is not a valid host name")
    return ascii_host


def _idna_reason(exc: Exception) -> str:
    text = str(exc)
    if "not allowed" in text or "Codepoint" in text:
        return "it contains a character not allowed in host names, such as _ or a space"
    return text[:1].lower() + text[1:] if text else "invalid label"


def _check_public(host: str, shown: str) -> None:
    labels = host.split(".")
    if len(labels) < 2:
        raise NameRejected(f"{shown} is a single-label name; use a fully qualified public name")
    if labels[-1] in RESERVED_TLDS or host == "localhost":
        raise NameRejected(f"{shown} is a reserved or internal name, not a public one")
    if _suffixes().privatesuffix(host) is None:
        if _suffixes().publicsuffix(host) is None:
            raise NameRejected(f"{shown} is not under a public top-level domain")
        raise NameRejected(f"{shown} is a public suffix, not a registrable domain")


def check_public_url(url: str) -> None:
    """Refuse, with :class:`NameRejected` saying why, a URL that relying parties on the
    public Internet could not reach: a host that is not a public DNS name (reserved or
    internal TLDs, single labels, names not under a public suffix, RFC 2606's
    documentation domains and names under them) or an IP address that is not global."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NameRejected(f"{url} is not an http:// or https:// URL with a host")
    host = parts.hostname.lower().rstrip(".")
    if _is_ip_address(host):
        address = ipaddress.ip_address(host.strip("[]"))
        if not address.is_global:
            raise NameRejected(f"{host} is a private, loopback or reserved address")
        return
    ascii_host = _to_ascii(host, host)
    _check_public(ascii_host, host)
    if any(ascii_host == domain or ascii_host.endswith("." + domain)
           for domain in DOCUMENTATION_DOMAINS):
        raise NameRejected(f"{host} is under a domain reserved for documentation (RFC 2606)")
