"""Settings are read in one place and refused as a whole when anything is wrong."""

import dataclasses

import pytest
from chancery_shared import config as cfg


@dataclasses.dataclass(frozen=True)
class Example:
    url: str = cfg.setting("X_URL")
    port: int = cfg.setting("X_PORT", 8080, cfg.parse_port)
    debug: bool = cfg.setting("X_DEBUG", False, cfg.parse_bool)
    secret: str = cfg.setting("X_SECRET", "s3cret", secret=True)


def test_defaults_and_parsing():
    settings = cfg.load(Example, {"X_URL": "amqp://u:pw@host//", "X_PORT": "9000",
                                  "X_DEBUG": "yes"})
    assert (settings.url, settings.port, settings.debug) == ("amqp://u:pw@host//", 9000, True)


def test_every_problem_is_reported_at_once():
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(Example, {"X_PORT": "99999", "X_DEBUG": "maybe"})
    assert set(err.value.problems) == {"X_URL", "X_PORT", "X_DEBUG"}


def test_describe_masks_secrets_and_url_credentials():
    shown = cfg.describe(cfg.load(Example, {"X_URL": "amqp://u:pw@host//"}))
    assert shown["X_SECRET"] == "***"
    assert "pw" not in shown["X_URL"] and shown["X_URL"].endswith("@host//")


def test_platform_settings_reject_a_bad_variable():
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(cfg.PlatformSettings, {"CHANCERY_RELAY_POLL_SECONDS": "-1"})
    assert "CHANCERY_RELAY_POLL_SECONDS" in err.value.problems


def test_subscriber_curves_default_to_mozillas_and_refuse_unknown_names():
    assert cfg.load(cfg.PlatformSettings, {}).subscriber_curves == ("P-256", "P-384")
    chosen = cfg.load(cfg.PlatformSettings, {"CHANCERY_SUBSCRIBER_EC_CURVES": "p-256, P-521"})
    assert chosen.subscriber_curves == ("P-256", "P-521")
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(cfg.PlatformSettings, {"CHANCERY_SUBSCRIBER_EC_CURVES": "P-256,P-192"})
    assert "CHANCERY_SUBSCRIBER_EC_CURVES" in str(err.value)
