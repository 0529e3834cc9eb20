"""The API browser: Swagger UI at ``/api/docs/`` over the five services' OpenAPI documents.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist`` folder, with
the version and the Apache-2.0 licence of Swagger UI beside them), served by us: the page
calls no outside network. The page itself is static; the documents it shows are each
service's own ``/api/<name>/openapi.json``, fetched through the gateway by the browser.
"Try it out" sends real requests: paste an access token into *Authorize* first.

One service's app serves it (identity's, which owns the ``/api/docs`` prefix at the
gateway); the list of documents is :data:`DOCUMENTS`, which a test holds against the
installed services.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, abort, redirect, send_from_directory

from chancery_shared.auth.policy import public

PREFIX = "/api/docs"
#: (the ``/api/<name>`` segment, the title shown in the selector), in the order shown.
DOCUMENTS: tuple[tuple[str, str], ...] = (
    ("identity", "identity"),
    ("orders", "orders"),
    ("ca", "ca (ca-signer)"),
    ("ledger", "ledger"),
    ("audit", "audit"),
)
#: The Swagger UI files the page loads; nothing else of the package is served.
ASSETS = frozenset({"swagger-ui.css", "index.css", "swagger-ui-bundle.js",
                    "swagger-ui-standalone-preset.js", "favicon-32x32.png",
                    "favicon-16x16.png", "LICENSE", "VERSION"})
#: The page's own scripts only; Swagger UI sets inline styles and data: images.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; "
                           "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Chancery API</title>
  <meta name="swagger-ui-version" content="{version}">
  <link rel="stylesheet" href="{prefix}/assets/index.css">
  <link rel="stylesheet" href="{prefix}/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="{prefix}/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{prefix}/assets/swagger-ui-bundle.js"></script>
  <script src="{prefix}/assets/swagger-ui-standalone-preset.js"></script>
  <script src="{prefix}/config.js"></script>
</body>
</html>
"""


def dist_folder() -> Path:
    """Where the installed ``flask-swagger-ui`` keeps Swagger UI's built files."""
    return Path(str(files("flask_swagger_ui") / "dist"))


def swagger_ui_version() -> str:
    return (dist_folder() / "VERSION").read_text().strip()


def config_script() -> str:
    """The script that starts Swagger UI on the five documents (a file of its own, so the
    page needs no inline script and its CSP can forbid them)."""
    urls = [{"url": f"/api/{name}/openapi.json", "name": title} for name, title in DOCUMENTS]
    config = {"urls": urls, "urls.primaryName": urls[0]["name"], "dom_id": "#swagger-ui",
              "deepLinking": True, "persistAuthorization": False,
              "layout": "StandaloneLayout", "validatorUrl": None}
    return ("window.addEventListener('load', function () {\n"
            f"  var config = {json.dumps(config, indent=2)};\n"
            "  config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset];\n"
            "  config.plugins = [SwaggerUIBundle.plugins.DownloadUrl];\n"
            "  window.ui = SwaggerUIBundle(config);\n"
            "});\n")


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def blueprint() -> Blueprint:
    """The API browser's routes, all public (the documents are public too)."""
    browser = Blueprint("api_browser", __name__, url_prefix=PREFIX)
    page = _PAGE.format(prefix=PREFIX, version=swagger_ui_version())
    script = config_script()
    package_version = version("flask-swagger-ui")

    @browser.get("")
    @public
    def to_index() -> Response:
        return redirect(f"{PREFIX}/", code=308)

    def fresh(body: str, mimetype: str) -> Response:
        """The page and its start-up script: revalidated on every load."""
        return _secured(Response(body, mimetype=mimetype, headers={"Cache-Control": "no-cache"}))

    @browser.get("/")
    @public
    def index() -> Response:
        return fresh(page, "text/html")

    @browser.get("/config.js")
    @public
    def config() -> Response:
        return fresh(script, "text/javascript")

    @browser.get("/assets/<name>")
    @public
    def asset(name: str) -> Response:
        if name not in ASSETS:
            abort(404)
        response = send_from_directory(dist_folder(), name, max_age=3600)
        if name in ("LICENSE", "VERSION"):
            response.mimetype = "text/plain"
        response.headers["X-Swagger-UI-Package"] = f"flask-swagger-ui {package_version}"
        return _secured(response)

    return browser
