"""WSGI entry for gunicorn: ``gunicorn "chancery_shared.wsgi:create_app('orders')"``."""

from __future__ import annotations

import logging

from flask import Flask

from chancery_shared import service as services


def create_app(name: str) -> Flask:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = services.build(name)
    app = service.create_app()
    # gunicorn calls this in each worker (no preload), so each worker hears revocations
    service.revocation_listener().start(name=f"{name}-revocations")
    return app
