"""Each service's migrations build exactly the schema its model declares.

A column or index added to a model without a migration (or the other way round) works in
the tests that create tables from the model, then breaks the first upgraded database.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from chancery_shared.service import service_classes
from chancery_shared.testing import make_runtime


def _other_dialects_only(metadata, dialect: str) -> set[str]:
    """Indexes the model creates only on another database (``ddl_if``), by name: alembic
    compares copies of the model's indexes, which lose that condition."""
    return {index.name for table in metadata.tables.values() for index in table.indexes
            if getattr(index, "_ddl_if", None) is not None
            and index._ddl_if.dialect not in (None, dialect)}


@pytest.mark.parametrize("name", sorted(service_classes()))
def test_the_migrations_build_exactly_the_model(name, tmp_path):
    service = service_classes()[name](make_runtime(tmp_path))
    try:
        service.migrate()
        with service.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            elsewhere = _other_dialects_only(service.metadata, connection.dialect.name)
            differences = [d for d in compare_metadata(context, service.metadata)
                           if not (d[0] == "add_index" and d[1].name in elsewhere)]
        assert differences == []
    finally:
        service.dispose()
