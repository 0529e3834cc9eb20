"""WSGI entry for gunicorn: ``gunicorn "chancery_shared.wsgi:create_app('orders')"``."""

from __future__ import annotations

import logging

from flask import Flask

from chancery_shared import service as services


def create_app(name: str) -> Flask:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return services.build(name).create_app()
