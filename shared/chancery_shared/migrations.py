"""Alembic, driven from code: every service keeps its own migrations folder.

A service's ``migrations/env.py`` is two lines — it calls :func:`run_env` with the
service's metadata — and :func:`upgrade` runs it on the service's engine.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Engine, MetaData


def _config(script_location: Path, engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["engine"] = engine
    return config


def upgrade(script_location: Path, engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(script_location, engine), revision)


def downgrade(script_location: Path, engine: Engine, revision: str) -> None:
    command.downgrade(_config(script_location, engine), revision)


def autogenerate(script_location: Path, engine: Engine, message: str) -> None:
    """Write a new revision from the difference between the models and ``engine``."""
    command.revision(_config(script_location, engine), message=message, autogenerate=True)


def _render_item(kind: str, obj: object, autogen_context: object) -> str | bool:
    """Render our column types as plain SQLAlchemy ones, so revisions import nothing of ours."""
    from chancery_shared.db import UtcDateTime

    if kind == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``env.py`` (online mode only: we always have an engine)."""
    engine: Engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=engine.dialect.name == "sqlite",
                          compare_type=True, render_item=_render_item)
        with context.begin_transaction():
            context.run_migrations()
