"""The Flask app factory every service uses.

It gives each service, identically: ``application/problem+json`` for every error,
request ids, the client IP (from ``X-Forwarded-For`` only behind a trusted proxy),
bearer-token authentication on every route not marked public, ``/healthz``,
``/readyz``, Prometheus ``/metrics`` and an OpenAPI 3 document generated from the
marshmallow schemas (flask-smorest) at ``/api/<name>/openapi.json``.
"""

from __future__ import annotations

import http
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Flask, Response, g, request
from flask_smorest.utils import prepare_response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from werkzeug.exceptions import HTTPException

from chancery_shared.auth.policy import is_public, public
from chancery_shared.auth.tokens import InvalidToken, TokenVerifier
from chancery_shared.web.problems import (
    PROBLEM_JSON,
    Problem,
    Unauthenticated,
    flatten_messages,
    render,
)

log = logging.getLogger(__name__)
_PUBLIC_ENDPOINTS = {"api-docs.openapi_json"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ErrorSchema(ma.Schema):
    """What every error answer carries (RFC 9457 problem details), for the OpenAPI document.

    Some problems add members (``retry_after``, ``balance_cents``...), hence INCLUDE.
    """

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(required=True, metadata={"description": "urn:chancery:problem:<code>"})
    title = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    detail = ma.fields.String(required=True)
    code = ma.fields.String(required=True, metadata={"description": "stable error code"})
    errors = ma.fields.Dict(keys=ma.fields.String(),
                            values=ma.fields.List(ma.fields.String()),
                            metadata={"description": "messages by field"})


class _Api(flask_smorest.Api):
    """flask-smorest, with our error format instead of its own."""

    ERROR_SCHEMA = ErrorSchema

    def _register_responses(self) -> None:
        """Document error responses as what they are: application/problem+json."""
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        return http_exception_to_problem(error)


def http_exception_to_problem(error: HTTPException) -> Response:
    data = getattr(error, "data", None) or {}
    errors = flatten_messages(data["messages"]) if "messages" in data else None
    status = error.code or 500
    codes = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
             415: "unsupported_media_type", 422: "validation_failed", 429: "too_many_requests"}
    detail = error.description or ""
    if errors:
        detail = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
    headers = {k: v for k, v in (data.get("headers") or {}).items()}
    if status == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return render(Problem(detail, status=status, code=codes.get(status, "error"),
                          title=error.name, errors=errors), headers)


class TrustedProxies:
    def __init__(self, entries: Iterable[str]):
        self._networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def trusts(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_ip(self, remote_addr: str | None, forwarded_for: str | None) -> str | None:
        """The first untrusted hop from the right, when the peer is a trusted proxy."""
        if not forwarded_for or not self.trusts(remote_addr):
            return remote_addr
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return remote_addr
        return hops[0] if hops else remote_addr


def create_app(*, service: str, api_name: str, title: str, description: str,
               blueprints: Sequence[flask_smorest.Blueprint], verifier: TokenVerifier | None,
               trusted_proxies: Iterable[str] = ("127.0.0.1", "::1"),
               readiness_checks: dict[str, Callable[[], None]] | None = None,
               max_body_bytes: int = 1024 * 1024,
               extra_routes: Callable[[Flask], None] | None = None,
               config: dict[str, Any] | None = None) -> Flask:
    prefix = f"/api/{api_name}"
    app = Flask(f"chancery_{service.replace('-', '_')}")
    app.config.update(
        API_TITLE=title, API_VERSION="1.0.0", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=prefix, OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"bearer": []}],
        },
        MAX_CONTENT_LENGTH=max_body_bytes, JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    app.json.sort_keys = False  # type: ignore[attr-defined]
    api = _Api(app)
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    app.extensions["chancery_api"] = api
    proxies = TrustedProxies(trusted_proxies)
    metrics = _Metrics(service)

    @app.before_request
    def _identify_request() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.client_ip = proxies.client_ip(request.remote_addr,
                                        request.headers.get("X-Forwarded-For"))
        g.started = time.perf_counter()
        g.principal = None
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        open_route = is_public(view) or request.endpoint in _PUBLIC_ENDPOINTS
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer " and verifier is not None:
            try:
                g.principal = verifier.verify(header[7:].strip())
            except InvalidToken as exc:
                if not open_route:
                    raise Unauthenticated(str(exc), code=exc.code) from exc
        if g.principal is None and view is not None and not open_route:
            raise Unauthenticated("a valid bearer token is required")

    @app.before_request
    def _refuse_nul_in_query() -> None:
        """A NUL can reach no database column (PostgreSQL refuses it in text: a 500)."""
        if any("\x00" in value for value in request.args.values()):
            raise Problem("query parameters cannot contain NUL characters", status=400,
                          code="bad_request")

    @app.before_request
    def _refuse_unparseable_json() -> None:
        """JSON the parsers would crash on is a 400, not a 500.

        webargs and ``request.get_json`` turn malformed JSON into a 400 themselves, but
        not the two ways a well-formed-looking body makes ``json.loads`` raise something
        else: nesting deeper than the interpreter's recursion limit (RecursionError) and
        integers longer than its 4,300-digit conversion limit (a plain ValueError).
        """
        if not request.is_json or request.method in ("GET", "HEAD", "OPTIONS"):
            return
        data = request.get_data(cache=True)  # 413 beyond MAX_CONTENT_LENGTH
        if not data:
            return
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return  # malformed: the argument parser answers it as always
        except (RecursionError, ValueError) as exc:
            raise Problem("the JSON body cannot be processed: it is nested too deeply or "
                          "holds a number too long", status=400, code="bad_request") from exc
        if b"\\u0000" in data and _holds_nul(document):
            raise Problem("JSON strings cannot contain NUL characters", status=400,
                          code="bad_request")

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith(prefix + "/v1"):
            response.headers.setdefault("Cache-Control", "no-store")
        if response.status_code == 401:
            response.headers.setdefault("WWW-Authenticate", 'Bearer realm="chancery"')
        metrics.observe(request, response)
        return response

    @app.errorhandler(Problem)
    def _problem(problem: Problem) -> Response:
        return render(problem)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        return http_exception_to_problem(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error in request %s", getattr(g, "request_id", "?"))
        return render(Problem("an unexpected error occurred; quote the request id "
                              f"{getattr(g, 'request_id', '')} when reporting it",
                              status=500, code="internal_error"))

    checks = readiness_checks or {}

    @public
    def healthz() -> Response:
        return app.json.response({"status": "ok", "service": service})

    @public
    def readyz() -> Response:
        results, ok = {}, True
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
                ok = False
                results[name] = f"unavailable: {type(exc).__name__}"
        response = app.json.response({"status": "ok" if ok else "unavailable",
                                      "service": service, "checks": results})
        response.status_code = 200 if ok else 503
        return response

    @public
    def metrics_view() -> Response:
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule(f"{prefix}/healthz", "healthz", healthz)
    app.add_url_rule(f"{prefix}/readyz", "readyz", readyz)
    app.add_url_rule(f"{prefix}/metrics", "metrics", metrics_view)
    if extra_routes:
        extra_routes(app)
    return app


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON document has a NUL in any string, key or value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class _Metrics:
    """Per-app registry: the embedded process hosts five apps side by side."""

    def __init__(self, service: str):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("chancery_http_requests_total", "HTTP requests",
                                ["service", "method", "route", "status"], registry=self.registry)
        self.latency = Histogram("chancery_http_request_duration_seconds",
                                 "HTTP request latency", ["service", "route"],
                                 registry=self.registry)
        self.service = service

    def observe(self, req: Any, response: Response) -> None:
        route = req.url_rule.rule if req.url_rule is not None else "unmatched"
        self.requests.labels(self.service, req.method, route, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            self.latency.labels(self.service, route).observe(time.perf_counter() - started)


def client_ip() -> str | None:
    return getattr(g, "client_ip", None)


def request_id() -> str | None:
    return getattr(g, "request_id", None)


def request_context(principal: Any = None) -> Any:
    """The message context of the current request: the caller, their IP and account."""
    from chancery_shared.auth.policy import current_principal
    from chancery_shared.messaging.envelope import Actor, Context

    principal = principal or current_principal()
    return Context(actor=Actor(user_id=principal.user_id, user_name=principal.name,
                               ip=client_ip()), account_id=principal.account_id)
