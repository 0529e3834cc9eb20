"""CAA (RFC 8659): may this CA issue for a name? Checked right before every signing
command (first issuance, reissues, a plan's reissues), for every name of the order.

For each name (a wildcard ``*.x`` starts at ``x``) the relevant CAA RRset is the first
non-empty one found climbing from the name towards the top-level domain. Issuance is
refused when that set:

- has a property with the issuer-critical flag (128) whose tag we do not understand;
- has ``issue`` properties (for a wildcard: ``issuewild`` ones if there are any, else
  ``issue``) and none of them names one of our issuer domains
  (``CHANCERY_CAA_ISSUER_DOMAINS``); ``issue ";"`` names nobody.

Parameters after ``;`` (``issue "ca.example; account=123"``) are accepted and ignored:
Chancery binds no account or validation method to its CAA records. NXDOMAIN and empty
answers mean "no CAA here": the climb goes on. Any other DNS failure (SERVFAIL, timeout,
a refused query) refuses: the Baseline Requirements let a CA treat a failed lookup as
permission only under narrow conditions (the failure is outside the CA's
infrastructure, retried, and the zone has no DNSSEC chain) that we cannot establish, so
refusing is the safe reading.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from chancery_shared import config as cfg

log = logging.getLogger(__name__)

# Tags Chancery understands (RFC 8659, RFC 9495, CA/B Forum contact tags); a critical
# property with any other tag forbids issuance.
KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "contactemail", "contactphone",
                        "issuemail", "issuevmc"})
CRITICAL = 0x80


@dataclasses.dataclass(frozen=True)
class CaaSettings:
    """CAA settings; the DNS ones are shared with domain validation."""

    check: bool = cfg.setting("CHANCERY_CAA_CHECK", True, cfg.parse_bool)
    issuer_domains: tuple[str, ...] = cfg.setting("CHANCERY_CAA_ISSUER_DOMAINS",
                                                  ("chancery.example",), cfg.parse_list)
    resolver: str | None = cfg.setting("CHANCERY_DNS_RESOLVER", None)
    port: int = cfg.setting("CHANCERY_DNS_PORT", 53, cfg.parse_port)
    timeout_seconds: float = cfg.setting("CHANCERY_DNS_TIMEOUT_SECONDS", 5.0,
                                         cfg.parse_positive_float)


class CaaRefused(Exception):
    """CAA forbids (or a failed lookup does not allow) issuance for a name."""


@dataclasses.dataclass(frozen=True)
class CaaFinding:
    """The evidence of one name's check: where the relevant set was found (or that none
    exists), the records seen, and why issuance is allowed."""

    name: str
    found_at: str | None
    records: list[str]
    outcome: str

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "found_at": self.found_at, "records": self.records,
                "outcome": self.outcome}


def make_resolver(settings: CaaSettings) -> dns.resolver.Resolver:
    """A resolver on the configured server (the system's when none is set)."""
    from chancery_orders.validation import make_resolver as resolver_for

    return resolver_for(settings.resolver, settings.port, settings.timeout_seconds)


class CaaChecker:
    """Looks up and judges the CAA records of names for one CA."""

    def __init__(self, settings: CaaSettings,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        self.settings = settings
        self.issuer_domains = {d.strip().lower().rstrip(".") for d in settings.issuer_domains}
        self.resolver = resolver or make_resolver(settings)

    @property
    def enabled(self) -> bool:
        return self.settings.check

    @property
    def vantage(self) -> str:
        """Which resolver answered: the configured one, or the system's."""
        servers = ", ".join(f"{server}:{self.resolver.port}"
                            for server in self.resolver.nameservers)
        return f"resolver {servers}" if servers else "the system resolver"

    def check(self, names: Iterable[str]) -> list[CaaFinding]:
        """The evidence for every name, or :class:`CaaRefused` (the reason) for the first
        name CAA forbids. Nothing is looked up (and nothing found) when checks are off."""
        if not self.settings.check:
            return []
        return [self.check_name(name) for name in names]

    def check_name(self, name: str) -> CaaFinding:
        wildcard = name.startswith("*.")
        base = name.removeprefix("*.").rstrip(".").lower()
        found_at, records = self._relevant_set(base)
        seen = [f'{flags} {tag} "{value}"' for flags, tag, value in records]
        if not records:
            return CaaFinding(name, None, [], f"allowed: no CAA records from {base} up to "
                                              "the top-level domain")
        for flags, tag, _ in records:
            if flags & CRITICAL and tag not in KNOWN_TAGS:
                raise CaaRefused(f"CAA at {found_at} has a critical property {tag!r} that "
                                 f"Chancery does not understand; issuance for {name} is "
                                 "not allowed")
        kind = "issue"
        if wildcard and any(tag == "issuewild" for _, tag, _ in records):
            kind = "issuewild"
        values = [value for _, tag, value in records if tag == kind]
        if not values:  # the set restricts nothing this name needs
            return CaaFinding(name, found_at, seen, f"allowed: the CAA set at {found_at} "
                                                    f"has no {kind} property")
        named = {value.split(";", 1)[0].strip().lower().rstrip(".") for value in values}
        if named & self.issuer_domains:
            ours = ", ".join(sorted(named & self.issuer_domains))
            return CaaFinding(name, found_at, seen,
                              f"allowed: {kind} at {found_at} names {ours}")
        others = ", ".join(sorted(n or '";" (no CA)' for n in named))
        raise CaaRefused(f"CAA at {found_at} allows only {others} to issue for {name} "
                         f"({kind}); this CA is {', '.join(sorted(self.issuer_domains))}")

    def _relevant_set(self, base: str) -> tuple[str, list[tuple[int, str, str]]]:
        """The first non-empty CAA set climbing from ``base``: (where, records)."""
        labels = base.split(".")
        for start in range(len(labels)):
            here = ".".join(labels[start:])
            try:
                answer = self.resolver.resolve(dns.name.from_text(here),
                                               dns.rdatatype.CAA, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                continue
            except dns.exception.Timeout as exc:
                raise CaaRefused(f"the CAA lookup for {here} timed out; issuance is not "
                                 "allowed without an answer") from exc
            except dns.resolver.NoNameservers as exc:
                raise CaaRefused(f"the CAA lookup for {here} failed (SERVFAIL or refused); "
                                 "issuance is not allowed without an answer") from exc
            except dns.exception.DNSException as exc:
                raise CaaRefused(f"the CAA lookup for {here} failed ({exc}); issuance is "
                                 "not allowed without an answer") from exc
            if answer.rrset is None:
                continue
            records = [(rdata.flags, rdata.tag.decode("ascii", "replace").lower(),
                        rdata.value.decode("utf-8", "replace")) for rdata in answer.rrset]
            if records:
                return here, records
        return base, []


def from_environment(environ: Mapping[str, str]) -> CaaChecker:
    """The checker of one orders service, from its settings (a bad value stops the start).

    Each service instance owns its checker and hands it to its units of work: nothing
    here is process-wide, so two services in one process cannot overwrite each other's.
    """
    settings = cfg.load(CaaSettings, environ)
    if not settings.check:
        log.warning("CHANCERY_CAA_CHECK is false: certificates are signed WITHOUT CAA "
                    "checks. This is only acceptable in a lab, never for a public CA.")
    return CaaChecker(settings)
