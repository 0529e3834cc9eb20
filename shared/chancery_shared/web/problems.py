"""``application/problem+json`` (RFC 9457) for every error a service returns.

Handlers and domain code raise :class:`Problem` (or one of its named subclasses); the
app factory renders it, and also renders Werkzeug's own errors (404, 405, 413…) and
unexpected exceptions (500, without internals) the same way.
"""

from __future__ import annotations

from typing import Any

from flask import Response, json
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error answer: status, a stable ``code`` (the type's last part), a human detail."""

    status = 400
    code = "bad_request"
    title: str | None = None

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 title: str | None = None, errors: dict[str, list[str]] | None = None,
                 **extra: Any):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.errors = errors
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:chancery:problem:{self.code}",
            "title": self.title or HTTP_STATUS_CODES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class NotFound(Problem):
    """Missing, or belonging to someone the caller may not see: the same answer."""

    status, code = 404, "not_found"


class Unauthenticated(Problem):
    status, code = 401, "unauthenticated"


class Forbidden(Problem):
    status, code = 403, "forbidden"


class Conflict(Problem):
    status, code = 409, "conflict"


class Unprocessable(Problem):
    status, code = 422, "unprocessable"


class InvalidField(Unprocessable):
    """One field is unacceptable: ``errors`` names it."""

    code = "validation_failed"

    def __init__(self, field: str, message: str, **extra: Any):
        super().__init__(f"{field}: {message}", errors={field: [message]}, **extra)


def render(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(problem.body()), status=problem.status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def flatten_messages(messages: Any) -> dict[str, list[str]]:
    """webargs reports ``{location: {field: [..]}}``; clients want ``{field: [..]}``."""
    flat: dict[str, list[str]] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            flat.setdefault(prefix or "_schema", []).extend(value)
        else:
            flat.setdefault(prefix or "_schema", []).append(str(value))

    if isinstance(messages, dict) and set(messages) <= {"json", "query", "form", "headers",
                                                        "files", "view_args", "path"}:
        for location, inner in messages.items():
            walk("" if isinstance(inner, dict) else "body" if location == "json" else location,
                 inner)
    else:
        walk("", messages)
    return flat
