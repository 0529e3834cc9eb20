"""The in-process gateway of the embedded mode: nginx's routing table, in Python.

It sends ``/api/<name>/...`` to that service's app and the public CA paths
(``/ca/...``) to ca-signer, unchanged, exactly as ``deploy/``'s nginx does; anything
else is a problem+json 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Gateway:
    def __init__(self, apps_by_api_name: Mapping[str, WSGIApp],
                 extra_prefixes: Mapping[str, str] | None = None):
        self._routes: list[tuple[str, WSGIApp]] = []
        for api_name, app in apps_by_api_name.items():
            self._routes.append((f"/api/{api_name}/", app))
        for prefix, api_name in (extra_prefixes or {}).items():
            if api_name in apps_by_api_name:
                self._routes.append((prefix, apps_by_api_name[api_name]))
        self._routes.sort(key=lambda route: -len(route[0]))

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self._routes:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return app(environ, start_response)
        body = json.dumps({"type": "urn:chancery:problem:not_found", "title": "Not Found",
                           "status": 404, "code": "not_found",
                           "detail": f"no service serves {path}"}).encode()
        start_response("404 NOT FOUND", [("Content-Type", "application/problem+json"),
                                         ("Content-Length", str(len(body)))])
        return [body]
