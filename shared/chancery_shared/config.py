"""Configuration from the environment, read in one place and validated at start-up.

Every service describes its settings as a frozen dataclass whose fields carry an
``env`` name and a parser; :func:`load` reads them all at once and reports every bad or
missing variable together, so a misconfigured process refuses to start with one clear
message instead of failing on first use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SERVICES = ("identity", "orders", "ca-signer", "ledger", "audit")


class ConfigError(Exception):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__(
            "invalid configuration: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
        )


def setting(env: str, default: Any = dataclasses.MISSING, parse: Callable[[str], Any] = str,
            secret: bool = False) -> Any:
    """Declare a dataclass field read from environment variable ``env``."""
    return dataclasses.field(
        default=default if default is not dataclasses.MISSING else dataclasses.MISSING,
        metadata={"env": env, "parse": parse, "secret": secret},
    )


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_curves(raw: str) -> tuple[str, ...]:
    """ECDSA curves subscriber keys may use: some of P-256, P-384, P-521 (Mozilla's root
    store policy accepts only the first two for subscriber certificates)."""
    curves = tuple(dict.fromkeys(part.upper() for part in parse_list(raw)))
    unknown = [curve for curve in curves if curve not in ("P-256", "P-384", "P-521")]
    if unknown or not curves:
        raise ValueError(f"expected a comma-separated list of P-256, P-384, P-521, got {raw!r}")
    return curves


def _load_debian_lists(raw: str) -> Any:
    from chancery_shared.subscriber_keys import load_debian_weak_keys

    return load_debian_weak_keys(raw)


def parse_port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("not a TCP port")
    return port


def parse_positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build settings ``cls`` from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = field.metadata.get("env")
        if env is None:
            continue
        raw = environ.get(env)
        if raw is None or raw == "":
            no_default = (field.default is dataclasses.MISSING
                          and field.default_factory is dataclasses.MISSING)
            if no_default:
                problems[env] = "is required"
            continue
        try:
            values[field.name] = field.metadata["parse"](raw)
        except (ValueError, TypeError) as exc:
            problems[env] = str(exc) or "invalid value"
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def describe(settings: Any) -> dict[str, str]:
    """Settings as printable text with secrets masked (for start-up logs)."""
    shown = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.metadata.get("secret"):
            value = "***"
        elif isinstance(value, str) and "://" in value and "@" in value:
            scheme, rest = value.split("://", 1)
            value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        shown[field.metadata.get("env", field.name)] = str(value)
    return shown


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("CHANCERY_VAR_DIR") or "var").resolve()


def env_name(service: str) -> str:
    """``ca-signer`` -> ``CA_SIGNER``: the service's part of its variable names."""
    return service.upper().replace("-", "_")


def database_url_variable(service: str) -> str:
    return f"CHANCERY_{env_name(service)}_DATABASE_URL"


def default_database_url(service: str, environ: Mapping[str, str] | None = None) -> str:
    return f"sqlite:///{var_dir(environ) / (service.replace('-', '_') + '.db')}"


@dataclasses.dataclass(frozen=True)
class PlatformSettings:
    """Settings every service process shares (the bus, tokens, proxies, URLs)."""

    broker_url: str = setting("CHANCERY_BROKER_URL", "memory://")
    jwks_url: str = setting("CHANCERY_JWKS_URL", "")
    token_issuer: str = setting("CHANCERY_TOKEN_ISSUER", "chancery-identity")
    token_audience: str = setting("CHANCERY_TOKEN_AUDIENCE", "chancery")
    trusted_proxies: tuple[str, ...] = setting(
        "CHANCERY_TRUSTED_PROXIES", ("127.0.0.1", "::1"), parse_list)
    relay_poll_seconds: float = setting("CHANCERY_RELAY_POLL_SECONDS", 0.05, parse_positive_float)
    consumer_max_retries: int = setting("CHANCERY_CONSUMER_MAX_RETRIES", 5, int)
    max_body_bytes: int = setting("CHANCERY_MAX_BODY_BYTES", 1024 * 1024, int)
    dev_bootstrap: bool = setting("CHANCERY_DEV_BOOTSTRAP", False, parse_bool)
    dev_password: str = setting("CHANCERY_DEV_PASSWORD", "chancery-dev-password", secret=True)
    subscriber_curves: tuple[str, ...] = setting(
        "CHANCERY_SUBSCRIBER_EC_CURVES", ("P-256", "P-384"), parse_curves)
    # a folder of Debian's openssl-blacklist files (blacklist.RSA-2048, ...): RSA keys
    # listed there are refused (CVE-2008-0166); empty: the lists are not checked
    debian_weak_keys: Any = setting("CHANCERY_WEAK_KEY_LISTS", None, _load_debian_lists)
