"""Automated domain validation: the checkers, the evidence they leave, and the job.

A checker looks for the domain's current token by one method and returns a
:class:`Finding` (what it asked, from where, what came back, the outcome); it never
raises for anything the network or the customer's servers do. :func:`check_domain` runs a
checker outside any transaction (lookups take seconds), then stores the attempt and
applies the outcome in one unit of work with its event. :func:`run_domain_checks` is the
scheduled pass: it expires validations past their reuse period, re-checks domains still
waiting for their token, and re-checks validated ones shortly before they expire.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import dns.exception
import dns.resolver
import requests
from chancery_shared import config as cfg
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import Actor, Context, isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import NotFound
from sqlalchemy import and_, or_, select

from chancery_orders.compliance import reusable_until
from chancery_orders.model import (
    CHALLENGE_LABEL,
    HTTP_FILE_PATH,
    Domain,
    DomainValidationAttempt,
    new_id,
)

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 4096  # evidence kept per attempt
MAX_HTTP_BYTES = 4096  # the most of a validation file that is read
MAX_TXT_BYTES = 4096  # a TXT answer larger than this is refused, not searched
MAX_REDIRECTS = 3
RECHECK_PENDING_FOR = timedelta(days=30)  # after submission
RECHECK_BEFORE_EXPIRY = timedelta(days=30)
ATTEMPTS_SHOWN = 20


def make_resolver(host: str | None, port: int, timeout_seconds: float) -> dns.resolver.Resolver:
    """The resolver every lookup of orders uses (validation and CAA): the configured
    server (``CHANCERY_DNS_RESOLVER``/``_PORT``), else the system's; no cache, so each
    check sees the zone as it is now."""
    if host:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = timeout_seconds
    resolver.lifetime = timeout_seconds
    resolver.cache = None
    return resolver


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """Where checks are made from. The HTTP port and host overrides are for tests and labs
    only: a public CA fetches from port 80 of the domain's own address."""

    dns_resolver: str | None = cfg.setting("CHANCERY_DNS_RESOLVER", None)
    dns_port: int = cfg.setting("CHANCERY_DNS_PORT", 53, cfg.parse_port)
    dns_timeout_seconds: float = cfg.setting("CHANCERY_DNS_TIMEOUT_SECONDS", 5.0,
                                             cfg.parse_positive_float)
    http_timeout_seconds: float = cfg.setting("CHANCERY_VALIDATION_HTTP_TIMEOUT_SECONDS", 10.0,
                                              cfg.parse_positive_float)
    http_port: int = cfg.setting("CHANCERY_VALIDATION_HTTP_PORT", 80, cfg.parse_port)
    http_host: str | None = cfg.setting("CHANCERY_VALIDATION_HTTP_HOST", None)
    vantage: str = cfg.setting("CHANCERY_VALIDATION_VANTAGE", socket.gethostname())
    recheck_seconds: float = cfg.setting("CHANCERY_DOMAIN_RECHECK_SECONDS", 300.0,
                                         cfg.parse_positive_float)


@dataclass(frozen=True)
class Finding:
    """What one check saw; ``reason`` is None when the token was found."""

    queried: str
    vantage: str
    answer: str
    reason: str | None = None

    @property
    def validated(self) -> bool:
        return self.reason is None

    @property
    def outcome(self) -> str:
        return "validated" if self.reason is None else f"failed: {self.reason}"


class Checker(Protocol):
    """One validation method: look for ``token`` proving control of ``domain``."""

    method: str

    def check(self, domain: Domain, token: str) -> Finding: ...


def _truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 15] + "… [truncated]"


# --- dns-txt -------------------------------------------------------------------------------


class DnsTxtChecker:
    """The token in a TXT record at ``_chancery-challenge.<domain>``, else at the domain
    (BR 3.2.2.4.7). CNAMEs are followed by the resolver; names compare case-insensitively."""

    method = "dns-txt"

    def __init__(self, settings: ValidationSettings):
        self.settings = settings

    def _resolver(self) -> dns.resolver.Resolver:
        return make_resolver(self.settings.dns_resolver, self.settings.dns_port,
                             self.settings.dns_timeout_seconds)

    @property
    def vantage(self) -> str:
        where = (f"{self.settings.dns_resolver}:{self.settings.dns_port}"
                 if self.settings.dns_resolver else "system resolver")
        return f"resolver {where} from {self.settings.vantage}"

    def check(self, domain: Domain, token: str) -> Finding:
        names = [f"{CHALLENGE_LABEL}.{domain.name}", domain.name]
        seen: list[str] = []
        reasons: list[str] = []
        resolver = self._resolver()
        for name in names:
            strings, reason = self._lookup(resolver, name, seen)
            if strings is not None and token in strings:
                return Finding(" ".join(names[:len(seen)]), self.vantage,
                               _truncate("\n".join(seen)))
            reasons.append(reason or f"{name}: no TXT string equals the token")
        return Finding(" ".join(names), self.vantage, _truncate("\n".join(seen)),
                       "; ".join(reasons))

    def _lookup(self, resolver: dns.resolver.Resolver, name: str,
                seen: list[str]) -> tuple[list[str] | None, str | None]:
        """The TXT strings at ``name`` (parts joined), or None and why not."""
        timeout = self.settings.dns_timeout_seconds
        try:
            answer = resolver.resolve(name, "TXT", search=False)
        except dns.resolver.NXDOMAIN:
            seen.append(f"{name}: NXDOMAIN")
            return None, f"{name}: no such name (NXDOMAIN)"
        except dns.resolver.NoAnswer:
            seen.append(f"{name}: no TXT record")
            return None, f"{name}: no TXT record"
        except dns.resolver.LifetimeTimeout:
            seen.append(f"{name}: timeout")
            return None, f"{name}: no answer within {timeout:g} s (timeout)"
        except dns.resolver.NoNameservers as exc:
            seen.append(f"{name}: {exc}")
            return None, f"{name}: the resolver failed (SERVFAIL, refused or unusable answer)"
        except dns.exception.DNSException as exc:
            seen.append(f"{name}: {type(exc).__name__}: {exc}")
            return None, f"{name}: unusable DNS answer ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - a lookup must never crash a check
            log.warning("TXT lookup of %s failed", name, exc_info=True)
            seen.append(f"{name}: {type(exc).__name__}")
            return None, f"{name}: lookup failed ({type(exc).__name__})"
        strings = [b"".join(rdata.strings).decode("utf-8", "replace")
                   for rdata in answer if hasattr(rdata, "strings")]
        via = ""
        if answer.canonical_name != answer.qname:
            via = f" (via CNAME to {answer.canonical_name.to_text(omit_final_dot=True)})"
        size = sum(len(s) for s in strings)
        if size > MAX_TXT_BYTES:
            seen.append(f"{name}{via}: {len(strings)} TXT strings, {size} bytes")
            return None, f"{name}: TXT answer too large ({size} bytes)"
        seen.append(f"{name}{via}: TXT " + ", ".join(repr(s) for s in strings))
        return strings, None


# --- http-file -----------------------------------------------------------------------------


class AddressRefused(Exception):
    """A name the HTTP check will not fetch from: it does not resolve, or to a non-public
    address (loopback, private, link-local such as a cloud's metadata service…)."""


def public_address(host: str, port: int) -> str:
    """The address to fetch ``host`` from, when every address it resolves to is public.

    A domain (or a redirect) naming an internal address would otherwise make the check a
    way to read the CA's own network, with the answer shown as evidence (SSRF).
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"{host} does not resolve ({type(exc).__name__})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            raise AddressRefused(f"{host} resolves to {address}, which is not a public "
                                 "address")
    if not addresses:
        raise AddressRefused(f"{host} has no address")
    return addresses[0]


class HttpFileChecker:
    """The token in ``http://<domain>/.well-known/pki-validation/<file>`` (BR 3.2.2.4.18):
    at most ``MAX_REDIRECTS`` redirects, only to http or https on ports 80 or 443 of a
    public address (``public_address``); at most ``MAX_HTTP_BYTES`` read; the body,
    stripped, must equal the token."""

    method = "http-file"

    def __init__(self, settings: ValidationSettings):
        self.settings = settings

    @property
    def vantage(self) -> str:
        where = (f"connecting to {self.settings.http_host}" if self.settings.http_host
                 else "connecting to the domain's address")
        port = "" if self.settings.http_port == 80 else f", port 80 as {self.settings.http_port}"
        return f"{where}{port} from {self.settings.vantage}"

    def check(self, domain: Domain, token: str) -> Finding:
        url = f"http://{domain.name}{HTTP_FILE_PATH}{domain.http_file_name}"
        fetched: list[str] = []
        seen: list[str] = []

        def failed(reason: str) -> Finding:
            return Finding(" -> ".join(fetched), self.vantage, _truncate("\n".join(seen)), reason)

        with requests.Session() as session:
            session.trust_env = False  # no proxies from the environment
            for _hop in range(MAX_REDIRECTS + 1):
                fetched.append(url)
                target = self._connect_url(url)
                if isinstance(target, str):
                    return failed(target)
                connect_url, host_header = target
                try:
                    response = session.get(
                        connect_url, headers={"Host": host_header, "Accept": "text/plain"},
                        timeout=self.settings.http_timeout_seconds, stream=True,
                        allow_redirects=False)
                except requests.Timeout:
                    return failed(f"{url}: no answer within "
                                  f"{self.settings.http_timeout_seconds:g} s (timeout)")
                except requests.RequestException as exc:
                    return failed(f"{url}: could not connect ({type(exc).__name__})")
                with response:
                    if response.is_redirect:
                        location = response.headers.get("Location", "")
                        seen.append(f"{url}: HTTP {response.status_code} to {location}")
                        url = urljoin(url, location)
                        continue
                    try:
                        body = response.raw.read(MAX_HTTP_BYTES + 1, decode_content=True)
                    except Exception as exc:  # noqa: BLE001 - a broken answer is a failure
                        return failed(f"{url}: the answer could not be read "
                                      f"({type(exc).__name__})")
                    text = body[:MAX_HTTP_BYTES].decode("utf-8", "replace")
                    seen.append(f"{url}: HTTP {response.status_code}, {text!r}")
                    if response.status_code != 200:
                        return failed(f"{url}: HTTP {response.status_code}")
                    if len(body) > MAX_HTTP_BYTES:
                        return failed(f"{url}: the file is larger than {MAX_HTTP_BYTES} bytes")
                    if text.strip() != token:
                        return failed(f"{url}: the file does not hold the token")
                    return Finding(" -> ".join(fetched), self.vantage,
                                   _truncate("\n".join(seen)))
            return failed(f"more than {MAX_REDIRECTS} redirects")

    def _connect_url(self, url: str) -> tuple[str, str] | str:
        """Where to connect for ``url`` and the Host header, or why the URL is refused."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"{url}: redirect to a scheme other than http or https"
        try:
            port = parts.port or (80 if parts.scheme == "http" else 443)
        except ValueError:
            return f"{url}: invalid port"
        if port not in (80, 443) or not parts.hostname:
            return f"{url}: redirect to port {port} (only 80 and 443 are allowed)"
        host = parts.hostname
        connect_port = self.settings.http_port if port == 80 else port
        if self.settings.http_host:  # a test or lab: every fetch goes there
            connect_host = self.settings.http_host
        else:
            try:
                address = public_address(host, connect_port)
            except AddressRefused as exc:
                return f"{url}: {exc}"
            # http: connect to the address just checked, so a second lookup cannot
            # answer another (DNS rebinding); https must connect by name for its
            # certificate check
            connect_host = address if parts.scheme == "http" else host
        if ":" in connect_host:
            connect_host = f"[{connect_host}]"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return f"{parts.scheme}://{connect_host}:{connect_port}{path}", host


# --- running checks and keeping the evidence ---------------------------------------------


class DomainValidation:
    """The configured checkers, and the scheduled pass over the domains."""

    def __init__(self, settings: ValidationSettings):
        self.settings = settings
        self.checkers: dict[str, Checker] = {"dns-txt": DnsTxtChecker(settings),
                                             "http-file": HttpFileChecker(settings)}

    @classmethod
    def from_environment(cls, environ: Any) -> DomainValidation:
        return cls(cfg.load(ValidationSettings, environ))

    def checker(self, method: str) -> Checker:
        return self.checkers[method]


class CheckedDomain:
    """A domain and the attempt just made, as ``POST /domains/{id}/check`` answers them."""

    def __init__(self, domain: Domain, attempt: DomainValidationAttempt):
        self._domain = domain
        self.last_attempt = attempt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._domain, name)


def _visible_domain(uow: UnitOfWork, principal: Principal, domain_id: str) -> Domain:
    domain = uow.session.get(Domain, domain_id)
    if domain is None or not (principal.is_operator
                              or domain.account_id == principal.account_id):
        raise NotFound("no such domain")
    return domain


def check_domain_now(uow_factory: Callable[[], UnitOfWork], validation: DomainValidation,
                     principal: Principal, context: Context, domain_id: str,
                     now: datetime) -> CheckedDomain:
    """``POST /domains/{id}/check``: look for the token now, keep the evidence."""
    with uow_factory() as uow:
        domain = _visible_domain(uow, principal, domain_id)
        uow.session.expunge(domain)
    finding = validation.checker(domain.method).check(domain, domain.token)
    with uow_factory() as uow:
        return record_attempt(uow, domain.id, domain.method, domain.token, finding, context,
                              now, trigger="on_demand")


def record_attempt(uow: UnitOfWork, domain_id: str, method: str, token: str, finding: Finding,
                   context: Context, now: datetime, *, trigger: str) -> CheckedDomain:
    """Store the attempt and apply its outcome, with its event, in one unit of work.

    Success validates the domain for the reuse period and spends the token. Failure moves
    a pending domain to ``failed``; a validated one keeps its validation until it ends.
    A token that changed while the check ran (another check spent it) counts as failed.
    """
    domain = uow.session.get(Domain, domain_id, with_for_update=True)
    assert domain is not None
    if finding.validated and domain.token != token:
        finding = dataclasses.replace(finding, reason="the token was spent by another "
                                                      "validation while this check ran")
    attempt = DomainValidationAttempt(
        id=new_id(), domain_id=domain.id, method=method, token=token,
        queried=finding.queried[:2000], vantage=finding.vantage[:300],
        answer=_truncate(finding.answer), outcome=finding.outcome[:1000],
        validated=finding.validated, trigger=trigger,
        requested_by_id=context.actor.user_id, requested_by_name=context.actor.user_name,
        created_at=now)
    uow.session.add(attempt)
    who = context.actor.user_name or "The scheduled re-check"
    context = context.with_account(domain.account_id)
    before = domain.status_at(now)
    if finding.validated:
        domain.status = "validated"
        domain.validated_at = now
        domain.validated_until = reusable_until(now)
        domain.validated_by_id = context.actor.user_id
        domain.validated_by_name = context.actor.user_name or "automatic check"
        domain.validation_note = f"{method}: {finding.queried}"
        domain.validated_with = method
        domain.spend_token()
        _event(uow, "orders.domain.validated", context, domain,
               f"{who} checked the domain {domain.name} by {method} ({finding.queried}, "
               f"{finding.vantage}): token found; validated until "
               f"{domain.validated_until.date().isoformat()}")
        # orders waiting for this validation go on to be signed, in the same transaction
        from chancery_orders.handlers import resume_waiting_orders
        resume_waiting_orders(uow, context, domain.account_id)
    else:
        if before in ("pending", "failed"):
            domain.status = "failed"
        if before == "expired":
            domain.status = "expired"
        if trigger == "on_demand" or before == "pending":
            _event(uow, "orders.domain.failed", context, domain,
                   f"{who} checked the domain {domain.name} by {method} ({finding.queried}, "
                   f"{finding.vantage}): {finding.outcome}")
    uow.commit()
    return CheckedDomain(domain, attempt)


def _event(uow: UnitOfWork, type_: str, context: Context, domain: Domain, summary: str) -> None:
    uow.event(type_, context, subject=("domain", domain.id), summary=summary,
              data={"domain_id": domain.id, "name": domain.name, "method": domain.method,
                    "validated_until": isoformat(domain.validated_until)
                    if domain.validated_until else None},
              correlation_id=domain.id)


def list_attempts(uow: UnitOfWork, principal: Principal,
                  domain_id: str) -> list[DomainValidationAttempt]:
    """The domain's last ``ATTEMPTS_SHOWN`` attempts, newest first."""
    _visible_domain(uow, principal, domain_id)
    return list(uow.session.execute(
        select(DomainValidationAttempt).where(DomainValidationAttempt.domain_id == domain_id)
        .order_by(DomainValidationAttempt.created_at.desc(), DomainValidationAttempt.id.desc())
        .limit(ATTEMPTS_SHOWN)).scalars())


# --- the scheduled pass ---------------------------------------------------------------------


@dataclass
class DomainCheckRun:
    expired: list[str] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)
    validated: list[str] = dataclasses.field(default_factory=list)


SYSTEM = Context(actor=Actor.service("orders"), account_id=None)


def run_domain_checks(uow_factory: Callable[[], UnitOfWork], validation: DomainValidation,
                      now: datetime) -> DomainCheckRun:
    """One scheduled pass (each domain in its own transaction, so one failure stops none):
    expire validations past their reuse period, re-check pending and failed domains within
    ``RECHECK_PENDING_FOR`` of submission, and validated ones within
    ``RECHECK_BEFORE_EXPIRY`` of their end (a success extends the validation)."""
    run = DomainCheckRun()
    with uow_factory() as uow:
        ended = list(uow.session.execute(select(Domain.id).where(
            Domain.status == "validated", Domain.validated_until <= now)).scalars())
    for domain_id in ended:
        with uow_factory() as uow:
            domain = uow.session.get(Domain, domain_id, with_for_update=True)
            if domain is None or domain.status_at(now) != "expired" or domain.status != "validated":
                continue
            domain.status = "expired"
            _event(uow, "orders.domain.expired", SYSTEM.with_account(domain.account_id),
                   domain, f"The validation of the domain {domain.name} ended on "
                           f"{domain.validated_until.date().isoformat()}; it no longer "
                           "covers new certificates until it is validated again")
            uow.commit()
            run.expired.append(domain_id)
    with uow_factory() as uow:
        due = list(uow.session.execute(select(Domain).where(or_(
            and_(Domain.status.in_(("pending", "failed")),
                 Domain.created_at > now - RECHECK_PENDING_FOR),
            and_(Domain.status == "validated", Domain.validated_until > now,
                 Domain.validated_until <= now + RECHECK_BEFORE_EXPIRY),
        )).order_by(Domain.created_at)).scalars())
        for domain in due:
            uow.session.expunge(domain)
    for domain in due:
        try:
            finding = validation.checker(domain.method).check(domain, domain.token)
            with uow_factory() as uow:
                record_attempt(uow, domain.id, domain.method, domain.token, finding,
                               SYSTEM, now, trigger="scheduled")
        except Exception:  # noqa: BLE001 - one domain's trouble must not stop the pass
            log.exception("scheduled check of domain %s failed", domain.id)
            continue
        run.checked.append(domain.id)
        if finding.validated:
            run.validated.append(domain.id)
    return run


def job(uow_factory: Callable[[], UnitOfWork], validation: DomainValidation,
        clock: Callable[[], datetime], stop: threading.Event) -> None:
    """The background loop: a pass every ``CHANCERY_DOMAIN_RECHECK_SECONDS``."""
    while not stop.wait(validation.settings.recheck_seconds):
        try:
            run_domain_checks(uow_factory, validation, clock())
        except Exception:  # noqa: BLE001 - keep the job alive; the next pass retries
            log.exception("domain validation pass failed")
