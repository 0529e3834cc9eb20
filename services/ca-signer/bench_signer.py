"""How fast the signer issues, against the raw signing rate of `cryptography` (make bench-signer).

    .venv/bin/python services/ca-signer/bench_signer.py [--count N] [--json PATH]

One run measures, on the same machine and under the same load, so the ratios mean
something even where the absolute numbers do not:

a) raw: ``cryptography`` building and signing a DV-shaped TLS leaf with a key of the
   issuing CA's type, nothing else (the ceiling);
b) direct: ``handlers.sign_certificate`` in-process, with pkilint and the database
   (SQLite file, then PostgreSQL), one transaction per certificate as a worker does;
c) through RabbitMQ: sign commands published to ``ca_signer.commands`` and handled by 1,
   then 2, ``chancery consume ca-signer`` processes, timed until every certificate row
   is ``issued``;
d) OCSP: ``handlers.ocsp_answer`` for serials not asked about before, then again for the
   same serials (what a response cache would serve);
e) the build and signature of a CRL of 100,000 entries (bench_crl.py's measurement).

RabbitMQ and PostgreSQL come from the repo's deploy package (``Stack(...).up(apps=False)``
on free ports in a temporary directory) and are always stopped and deleted at the end;
without the server packages (c) and the PostgreSQL row are skipped, and say so.
The default count keeps a whole run within about three minutes on a loaded 2-CPU box.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cryptography
from chancery_ca_signer import handlers
from chancery_ca_signer.model import IssuedCertificate, Issuer
from chancery_ca_signer.pki.csr import parse_csr
from chancery_ca_signer.pki.issuance import issue_tls_certificate
from chancery_ca_signer.service import CaSignerService
from chancery_ca_signer.testing import evidence_for
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from chancery_shared.service import Runtime
from chancery_shared.testing import make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_crl import timed_build  # noqa: E402  (the CRL measurement, not a copy of it)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "var" / "bench" / "signer.json"
BASE_URL = "http://pki.chancery.com"
ACCOUNT = "acct-" + "b" * 31
SIGN = "ca_signer.certificate.sign"
QUEUE = "ca_signer.commands"
DV_POLICY = ObjectIdentifier("2.23.140.1.2.1")
#: How long the raw loop runs: long enough to be steady, short beside everything else.
RAW_SECONDS = 2.0
#: The short raw sample taken before each other measure, for its ratio.
RAW_SAMPLE_SECONDS = 0.5
#: How long one pass of OCSP answers may run at most.
OCSP_SECONDS = 3.0
#: Longest time one signing measurement may take; the rate is then of what was done.
SIGN_BUDGET = 20.0
#: Longest wait for a warm-up batch, or for the workers to finish a purged batch.
QUEUE_TIMEOUT = 60.0
#: Longest wait for a consumer process to connect to the queue.
CONSUMER_START_TIMEOUT = 60.0


@dataclasses.dataclass
class Row:
    """One line of the table and one entry of the JSON file."""

    key: str
    measure: str
    value: float | None
    unit: str
    ratio: float | None = None
    count: int | None = None
    seconds: float | None = None
    note: str = ""
    raw_nearby: float | None = None
    """The mean raw rate sampled just before and just after this measure: what
    ``ratio`` divides by (None for the raw row itself)."""


class Report:
    """Collects rows, prints each as it is measured, writes the JSON at the end.

    The box is shared and its load changes within a run, so each measure is compared
    with a short raw sample taken just before it rather than with one figure for all.
    """

    def __init__(self, raw: RawSigner) -> None:
        self.rows: list[Row] = []
        self.raw = raw
        self.raw_rate: float | None = None
        self.nearby: float | None = None

    def _sample(self) -> float:
        count, seconds = self.raw.run(RAW_SAMPLE_SECONDS)
        return count / seconds

    def sample_raw(self) -> None:
        """Call just before a measure; the row it produces samples again just after."""
        self.nearby = self._sample()

    def _bracket(self) -> float | None:
        """The mean of the raw samples before and after the measure just taken."""
        if self.nearby is None:
            return None
        before, self.nearby = self.nearby, None
        return (before + self._sample()) / 2

    def rate(self, key: str, measure: str, count: int, seconds: float, unit: str = "certs/s",
             note: str = "") -> Row:
        value = count / seconds if seconds > 0 else None
        return self.add(self.row(key, measure, value, unit, count, seconds, note, value))

    def row(self, key: str, measure: str, value: float | None, unit: str, count: int,
            seconds: float, note: str, rate: float | None) -> Row:
        """A row whose ratio is ``rate`` over the raw rate around it."""
        nearby = self._bracket()
        base = nearby or self.raw_rate
        ratio = rate / base if rate is not None and base else None
        return Row(key, measure, value, unit, ratio, count, seconds, note, nearby)

    def skipped(self, key: str, measure: str, unit: str, why: str) -> Row:
        return self.add(Row(key, measure, None, unit, note=f"skipped: {why}"))

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(format_row(row), flush=True)
        return row


def format_row(row: Row) -> str:
    value = "-" if row.value is None else f"{row.value:,.1f}" if row.value >= 10 \
        else f"{row.value:,.3f}"
    ratio = "" if row.ratio is None else f"{row.ratio:.4f}" if row.ratio < 0.1 \
        else f"{row.ratio:.3f}"
    nearby = "" if row.raw_nearby is None else f"{row.raw_nearby:,.0f}"
    line = f"{row.measure:<52} {value:>11} {row.unit:<10} {ratio:>7} {nearby:>8}"
    return f"{line}  {row.note}" if row.note else line


def header() -> str:
    return ("vs raw: the value over the raw rate sampled (0.5 s) just before and after it,"
            " shown as\n'raw near' (certs/s), because the load on a shared box varies during "
            "a run\n"
            f"{'measure':<52} {'value':>11} {'unit':<10} {'vs raw':>7} {'raw near':>8}\n"
            f"{'-' * 52} {'-' * 11} {'-' * 10} {'-' * 7} {'-' * 8}")


# --- inputs --------------------------------------------------------------------------


def name_of(i: int, run: str) -> str:
    return f"h{i}-{run}.bench.chancery.com"


def csr_pem(name: str) -> tuple[str, ec.EllipticCurvePublicKey]:
    """A P-256 CSR as a subscriber would send it, and its public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key.public_key()


def sign_commands(count: int, label: str) -> list[Envelope]:
    """``count`` sign commands shaped like orders' (built before any clock starts)."""
    run = uuid.uuid4().hex[:8] + label.replace("_", "-")  # a label of a DNS name
    commands = []
    for i in range(count):
        order_id, name = str(uuid.uuid4()), name_of(i, run)
        commands.append(new_envelope(
            type=SIGN, source="orders",
            context=Context(actor=Actor.service("orders"), account_id=ACCOUNT,
                            correlation_id=order_id),
            subject_type="order", subject_id=order_id, summary=f"sign {name}",
            data={"order_id": order_id, "issuance_id": str(uuid.uuid4()),
                  "csr_pem": csr_pem(name)[0], "profile": "dv",
                  "subject": {"common_name": name}, "sans": [name], "not_after": None,
                  "validations": evidence_for([name])}))
    return commands


def status_counts(service: CaSignerService, commands: Sequence[Envelope]) -> dict[str, int]:
    """Certificate records of these commands' orders, by status."""
    order_ids = [envelope.data["order_id"] for envelope in commands]
    with service.engine.connect() as connection:
        rows = connection.execute(select(IssuedCertificate.status, func.count())
                                  .where(IssuedCertificate.order_id.in_(order_ids))
                                  .group_by(IssuedCertificate.status)).all()
    return {status: count for status, count in rows}


def issuing_ca(service: CaSignerService) -> tuple[Issuer, x509.Certificate]:
    with service.uow() as uow:
        issuer = next(i for i in handlers.list_issuers(uow) if i.kind == "issuing"
                      and i.hierarchy == "public")
        uow.session.expunge(issuer)
    return issuer, x509.load_pem_x509_certificate(issuer.certificate_pem.encode())


# --- a) raw ----------------------------------------------------------------------------


def same_key_type(issuing_cert: x509.Certificate) -> tuple[Any, hashes.HashAlgorithm, str]:
    """A fresh private key of the issuing CA's type, its hash, and a label."""
    public = issuing_cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        algorithm: hashes.HashAlgorithm = hashes.SHA384() if public.curve.key_size >= 384 \
            else hashes.SHA256()
        return (ec.generate_private_key(public.curve), algorithm,
                f"ECDSA {public.curve.name}")
    if isinstance(public, rsa.RSAPublicKey):
        return (rsa.generate_private_key(65537, public.key_size), hashes.SHA256(),
                f"RSA {public.key_size}")
    raise SystemExit(f"unexpected issuing CA key {type(public).__name__}")


class RawSigner:
    """``cryptography`` alone building and signing a DV-shaped leaf: the ceiling."""

    def __init__(self, issuing_cert: x509.Certificate, subscriber_keys: Sequence[Any]):
        self.key, self.algorithm, self.label = same_key_type(issuing_cert)
        self.issuer_name = issuing_cert.subject
        self.subscriber_keys = list(subscriber_keys)
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.aia = x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(f"{BASE_URL}/ca/ocsp")),
            x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(
                                       f"{BASE_URL}/ca/issuers/x.crt"))])
        self.cdp = x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(f"{BASE_URL}/ca/crl/x.crl")], None, None, None)])
        self.usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
        self.policies = x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY, None)])
        for i in range(20):  # warm-up
            self.one(i)

    def one(self, i: int) -> x509.Certificate:
        name = f"h{i}.raw.chancery.com"
        return (x509.CertificateBuilder()
                .serial_number(x509.random_serial_number())
                .issuer_name(self.issuer_name).subject_name(x509.Name([]))
                .public_key(self.subscriber_keys[i % len(self.subscriber_keys)])
                .not_valid_before(self.now).not_valid_after(self.now + timedelta(days=199))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(self.usage, critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=True)
                .add_extension(self.aki, critical=False)
                .add_extension(self.aia, critical=False)
                .add_extension(self.policies, critical=False)
                .add_extension(self.cdp, critical=False)
                .sign(self.key, self.algorithm))

    def run(self, seconds: float) -> tuple[int, float]:
        """Certificates made in about ``seconds``, and the exact seconds."""
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            for _ in range(25):
                self.one(count)
                count += 1
        return count, elapsed


# --- b) direct -------------------------------------------------------------------------


def sign_directly(service: CaSignerService, commands: Sequence[Envelope],
                  budget: float) -> tuple[int, float]:
    """Commands handled in-process, one transaction each as a worker does, and the
    seconds it took; stops early once ``budget`` seconds have passed."""
    done, started = 0, time.perf_counter()
    for envelope in commands:
        with service.uow() as uow:
            handlers.sign_certificate(envelope, uow, service.keys, BASE_URL)
            uow.commit()
        done += 1
        if time.perf_counter() - started >= budget:
            break
    return done, time.perf_counter() - started


def measure_direct(report: Report, service: CaSignerService, key: str, label: str,
                   count: int) -> None:
    # pkilint validators and the key decryption are built once per worker: not timed
    sign_directly(service, sign_commands(3, "warm"), SIGN_BUDGET)
    commands = sign_commands(count, key)
    report.sample_raw()
    done, seconds = sign_directly(service, commands, SIGN_BUDGET)
    issued = status_counts(service, commands[:done]).get("issued", 0)
    note = "" if done == count else f"stopped after {SIGN_BUDGET:.0f}s: {done} of {count}"
    if issued != done:
        note += f"; only {issued} of {done} issued"
    report.rate(key, label, issued, seconds, note=note.strip("; "))


def measure_core(report: Report, service: CaSignerService, issuer: Issuer,
                 issuing_cert: x509.Certificate, count: int) -> None:
    """The PKI core alone (CSR checks, build, pkilint, sign, compare): direct minus the
    database, to show where the time of (b) goes."""
    key = service.keys.key_for(issuer)
    requests = [(command.data["csr_pem"], command.data["sans"])
                for command in sign_commands(count, "core")]
    report.sample_raw()
    done, started = 0, time.perf_counter()
    for pem, sans in requests:
        issue_tls_certificate(issuing_cert, key, parse_csr(pem), sans, "dv", None,
                              datetime.now(UTC), None, BASE_URL, include_common_name=False)
        done += 1
        if time.perf_counter() - started >= SIGN_BUDGET:
            break
    report.rate("core", "issue_tls_certificate alone: lint + sign, no DB", done,
                time.perf_counter() - started)


# --- d) OCSP ---------------------------------------------------------------------------


def ocsp_requests(service: CaSignerService, issuing_cert: x509.Certificate,
                  limit: int) -> list[bytes]:
    """DER requests (SHA-1 CertID, as RFC 5019 clients send) for issued certificates."""
    with service.engine.connect() as connection:
        pems = connection.execute(select(IssuedCertificate.certificate_pem)
                                  .where(IssuedCertificate.status == "issued")
                                  .limit(limit)).scalars().all()
    return [ocsp.OCSPRequestBuilder()
            .add_certificate(x509.load_pem_x509_certificate(pem.encode()), issuing_cert,
                             hashes.SHA1())
            .build().public_bytes(serialization.Encoding.DER) for pem in pems]


def answer_all(service: CaSignerService, requests: Sequence[bytes],
               seconds: float) -> tuple[int, float]:
    """Answers as the responder view gives them (a unit of work each), within ``seconds``."""
    count, started = 0, time.perf_counter()
    for der in requests:
        with service.uow() as uow:
            handlers.ocsp_answer(uow, service.keys, der, datetime.now(UTC))
        count += 1
        if time.perf_counter() - started >= seconds:
            break
    return count, time.perf_counter() - started


def measure_ocsp(report: Report, service: CaSignerService, issuing_cert: x509.Certificate,
                 count: int) -> None:
    requests = ocsp_requests(service, issuing_cert, count)
    if not requests:
        report.skipped("ocsp_uncached", "OCSP, first answer per serial", "answers/s",
                       "no certificate issued")
        return
    with service.uow() as uow:  # correctness first: a good answer, signed
        answer = handlers.ocsp_answer(uow, service.keys, requests[0], datetime.now(UTC))
    parsed = ocsp.load_der_ocsp_response(answer.der)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    fresh = requests[1:]
    report.sample_raw()
    done, seconds = answer_all(service, fresh, OCSP_SECONDS)
    report.rate("ocsp_uncached", "OCSP, first answer per serial (uncached)", done, seconds,
                "answers/s", note=f"{done} distinct serials")
    asked = fresh[:done]
    repeated = list(asked) * max(1, min(20, 2000 // max(len(asked), 1)))
    report.sample_raw()
    done, seconds = answer_all(service, repeated, OCSP_SECONDS)
    report.rate("ocsp_cached", "OCSP, serial answered before (cache path)", done, seconds,
                "answers/s", note=f"{len(asked)} serials asked again")


# --- e) CRL ----------------------------------------------------------------------------


def measure_crl(report: Report, service: CaSignerService, issuer: Issuer,
                issuing_cert: x509.Certificate, entries: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    key = service.keys.key_for(issuer)
    report.sample_raw()
    seconds = timed_build(entries, issuing_cert, key, now)
    per_second = entries / seconds
    report.add(report.row("crl", f"CRL of {entries:,} entries, build and sign (best of 3)",
                          seconds, "s", entries, seconds,
                          f"{per_second:,.0f} entries/s; ratio: entries/s to raw certs/s",
                          per_second))


# --- c) RabbitMQ -----------------------------------------------------------------------


def consumers_on_queue(broker_url: str) -> int:
    from chancery_shared.messaging import broker, topology

    with broker.connect(broker_url) as connection:
        channel = connection.channel()
        topology.declare(channel)  # idempotent; the first worker may not have yet
        return channel.queue_declare(QUEUE, passive=True).consumer_count


def start_worker(stack: Any, name: str, broker_url: str, expected: int) -> None:
    """Start one ``chancery consume ca-signer`` and wait until it consumes the queue."""
    component = stack.component(name)
    component.start()
    deadline = time.monotonic() + CONSUMER_START_TIMEOUT
    while consumers_on_queue(broker_url) < expected:
        component.check_running()  # raises with the end of its log if it died
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start consuming within "
                               f"{CONSUMER_START_TIMEOUT:.0f}s; see {component.log_file}")
        time.sleep(0.2)


def publish(broker_url: str, commands: Sequence[Envelope]) -> None:
    """Publish as the orders relay does: to the events exchange, persistent, confirmed."""
    from chancery_shared.messaging import broker, topology
    from kombu import Producer

    with broker.connect(broker_url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        producer = Producer(channel)
        for envelope in commands:
            producer.publish(envelope.to_json(), exchange=topology.EVENTS_EXCHANGE,
                             routing_key=envelope.type, message_id=envelope.event_id,
                             delivery_mode=2, content_type="application/json",
                             content_encoding="utf-8")


def through_queue(service: CaSignerService, broker_url: str, commands: Sequence[Envelope],
                  budget: float) -> tuple[int, float, dict[str, int]]:
    """Certificates issued and seconds from the first publish until all are issued, one
    is refused, or ``budget`` seconds passed (then the rest is purged from the queue and
    what the workers had already taken is let finish, so the next batch runs alone)."""
    started = time.perf_counter()
    publish(broker_url, commands)
    while True:
        counts = status_counts(service, commands)
        seconds = time.perf_counter() - started
        if counts.get("issued", 0) >= len(commands) or counts.get("rejected"):
            return counts.get("issued", 0), seconds, counts
        if seconds > budget:
            purge_and_settle(service, broker_url, commands)
            return counts.get("issued", 0), seconds, counts
        time.sleep(0.05)


def purge_and_settle(service: CaSignerService, broker_url: str,
                     commands: Sequence[Envelope]) -> None:
    from chancery_shared.messaging import broker

    with broker.connect(broker_url) as connection:
        connection.channel().queue_purge(QUEUE)
    last, quiet_since, deadline = None, time.monotonic(), time.monotonic() + QUEUE_TIMEOUT
    while time.monotonic() - quiet_since < 2.0 and time.monotonic() < deadline:
        counts = status_counts(service, commands)
        if counts != last:
            last, quiet_since = counts, time.monotonic()
        time.sleep(0.2)


def measure_queue(report: Report, stack: Any, service: CaSignerService, count: int) -> None:
    broker_url = stack.env["CHANCERY_BROKER_URL"]
    processes = [p for p in stack.topology.processes()
                 if p.kind == "consumer" and p.service.name == "ca-signer"]
    workers = [p.name for p in processes]
    argv = list(processes[0].argv)
    prefetch = argv[argv.index("--prefetch") + 1] if "--prefetch" in argv else "10 (default)"
    for n in (1, 2):
        start_worker(stack, workers[n - 1], broker_url, n)
        # each worker builds its pkilint validators on its first command: not timed
        through_queue(service, broker_url, sign_commands(2 * n, "warm"), QUEUE_TIMEOUT)
        commands = sign_commands(count, f"mq{n}")
        report.sample_raw()
        issued, seconds, counts = through_queue(service, broker_url, commands, SIGN_BUDGET)
        note = f"{n} consumer process{'es' if n > 1 else ''}, prefetch {prefetch}"
        if issued < count:
            note += f"; stopped after {SIGN_BUDGET:.0f}s: {issued} of {count} issued {counts}"
        report.rate(f"rabbitmq_{n}_worker{'s' if n > 1 else ''}",
                    f"sign via RabbitMQ, {n} worker{'s' if n > 1 else ''} (PostgreSQL)",
                    issued, seconds, note=note)


# --- the run ---------------------------------------------------------------------------


def signer_service(environ: dict[str, str]) -> CaSignerService:
    service = CaSignerService(Runtime.from_environment(environ))
    service.migrate()
    service.bootstrap_dev()
    return service


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
            "python": platform.python_version(), "cryptography": cryptography.__version__,
            "platform": platform.platform()}


def run(count: int, crl_entries: int, json_path: Path) -> int:
    info = machine()
    print(f"chancery signer benchmark: {info['cpu_count']} CPUs, load "
          f"{', '.join(f'{x:.2f}' for x in info['load_average'])}, cryptography "
          f"{info['cryptography']}, count {count}")
    if (info["cpu_count"] or 1) <= 2:
        print(f"note: only {info['cpu_count']} CPUs: PostgreSQL, RabbitMQ, the workers and "
              "this process share them, so a second worker cannot double the rate")
    secrets = {"CHANCERY_CA_KEY_PASSPHRASE": "bench-" + uuid.uuid4().hex,
               "CHANCERY_PUBLIC_BASE_URL": BASE_URL}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chancery-bench-") as temp:
        folder = Path(temp)
        sqlite = CaSignerService(make_runtime(folder / "sqlite", **secrets))
        try:
            sqlite.migrate()
            sqlite.bootstrap_dev()
            issuer, issuing_cert = issuing_ca(sqlite)
            subscriber_keys = [csr_pem(f"k{i}.chancery.com")[1] for i in range(32)]
            report = Report(RawSigner(issuing_cert, subscriber_keys))
            print(header())
            raw_count, raw_seconds = report.raw.run(RAW_SECONDS)
            report.raw_rate = raw_count / raw_seconds
            report.rate("raw", f"raw cryptography build+sign ({report.raw.label})", raw_count,
                        raw_seconds, note="DV-shaped leaf, no lint, no database")
            measure_direct(report, sqlite, "direct_sqlite",
                           "sign_certificate direct, lint + SQLite", count)
            measure_core(report, sqlite, issuer, issuing_cert, count)
            measure_ocsp(report, sqlite, issuing_cert, count)
            measure_crl(report, sqlite, issuer, issuing_cert, crl_entries)
        finally:
            sqlite.dispose()
        run_with_servers(report, folder / "stack", secrets, count)
    elapsed = time.monotonic() - started
    write_json(json_path, report, info, count, crl_entries, elapsed)
    print(f"total {elapsed:.0f}s; written to {json_path}")
    return 0


def run_with_servers(report: Report, folder: Path, secrets: dict[str, str],
                     count: int) -> None:
    """The PostgreSQL direct row and the RabbitMQ rows, or why they were skipped."""
    from chancery_deploy import missing_infrastructure, throwaway_servers

    missing = missing_infrastructure()
    if missing:
        why = f"server packages missing: {', '.join(missing)} (make system-packages)"
        report.skipped("direct_postgres", "sign_certificate direct, lint + PostgreSQL",
                       "certs/s", why)
        for n in (1, 2):
            report.skipped(f"rabbitmq_{n}_worker{'s' if n > 1 else ''}",
                           f"sign via RabbitMQ, {n} worker{'s' if n > 1 else ''}",
                           "certs/s", why)
        return
    environ = {"PATH": os.environ.get("PATH", ""), **secrets}
    print("    [stack] starting RabbitMQ and PostgreSQL (not timed)", file=sys.stderr,
          flush=True)
    with throwaway_servers(folder, signer_workers=2, environ=environ) as stack:
        service = signer_service({**stack.env, **secrets})
        try:
            measure_direct(report, service, "direct_postgres",
                           "sign_certificate direct, lint + PostgreSQL", count)
            measure_queue(report, stack, service, count)
        finally:
            service.dispose()


def write_json(path: Path, report: Report, info: dict[str, Any], count: int,
               crl_entries: int, elapsed: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "ca-signer", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info, "parameters": {"count": count, "crl_entries": crl_entries},
        "raw_rate_certs_per_second": report.raw_rate, "total_seconds": round(elapsed, 1),
        "results": {row.key: dataclasses.asdict(row) for row in report.rows},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200,
                        help="certificates per signing measurement (default 200)")
    parser.add_argument("--crl-entries", type=int, default=100_000,
                        help="entries of the CRL to build (default 100,000)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if args.count < 1 or args.crl_entries < 1:
        parser.error("--count and --crl-entries must be positive")
    stop_on_sigterm: Callable[..., None] = lambda *_: sys.exit(143)  # noqa: E731
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # so the finally blocks stop the servers
    return run(args.count, args.crl_entries, args.json)


if __name__ == "__main__":
    sys.exit(main())
