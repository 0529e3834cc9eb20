"""Cross-service wiring: queues, handlers and the documented catalogue agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from chancery_shared.messaging import contracts, topology
from chancery_shared.service import service_classes
from chancery_shared.testing import make_runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    runtime = make_runtime(tmp_path_factory.mktemp("wiring"))
    built = {name: cls(runtime) for name, cls in service_classes().items()}
    yield built
    for service in built.values():
        service.dispose()


def test_all_five_services_are_installed(services):
    assert set(services) == {"identity", "orders", "ca-signer", "ledger", "audit"}


def test_every_bound_message_type_has_a_handler_and_every_handler_is_bound(services):
    for name, service in services.items():
        handled = service.message_handlers()
        for spec in topology.queues_of(name):
            assert spec.name in handled, f"{name} does not consume its queue {spec.name}"
            handlers = handled[spec.name]
            if "#" in handlers:
                continue
            assert set(spec.bindings) == set(handlers), (
                f"{spec.name}: bound {sorted(set(spec.bindings) - set(handlers))} without a "
                f"handler, handles {sorted(set(handlers) - set(spec.bindings))} without a "
                "binding")
        assert set(handled) == {spec.name for spec in topology.queues_of(name)}


def test_every_bound_type_is_in_the_catalogue():
    known = set(contracts.known_types())
    for spec in topology.QUEUES.values():
        for key in spec.bindings:
            assert key == "#" or key in known, f"{spec.name} binds unknown type {key}"


def test_the_event_catalogue_document_names_every_type():
    document = (ROOT / "docs" / "events.md").read_text()
    missing = [t for t in contracts.known_types()
               if f"`{t}`" not in document and not _listed_as_sibling(t, document)]
    assert not missing, f"docs/events.md does not describe {missing}"


def _listed_as_sibling(type_: str, document: str) -> bool:
    """``a.b.c`` may be documented as `` `a.b.x`, `.c` `` on one line."""
    action = type_.rsplit(".", 1)[1]
    prefix = type_.rsplit(".", 1)[0]
    return any(f"`{prefix}." in line and f"`.{action}`" in line for line in document.splitlines())
