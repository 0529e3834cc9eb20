"""The nginx gateway, rendered from the topology.

One renderer produces the http-level configuration (upstreams, routes, problem+json
errors) for both the local stack and compose; only the upstream host names, the
listen address and name re-resolution differ. The local stack wraps it into a complete
`nginx.conf` whose pid, logs and temp paths all live under the var dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .topology import Service, Topology

PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "Bad Request",
          "The gateway could not parse this request (its path or a header is malformed)."),
    403: ("forbidden", "Forbidden", "This endpoint is only served to internal callers."),
    404: ("not_found", "Not Found", "No Chancery service serves this path."),
    413: ("payload_too_large", "Payload Too Large", "Request bodies are limited to 1 MiB."),
    414: ("uri_too_long", "URI Too Long", "Request lines are limited to 8 KiB."),
    494: ("request_header_too_large", "Bad Request",
          "Request header lines are limited to 8 KiB."),
    502: ("bad_gateway", "Bad Gateway", "The service behind this path is not answering."),
    503: ("service_unavailable", "Service Unavailable",
          "The service behind this path is unavailable."),
    504: ("gateway_timeout", "Gateway Timeout",
          "The service behind this path did not answer in time."),
}
# Errors nginx raises while it parses the request line or headers: the request has no
# URI yet, and an `error_page` naming a location (`@problem_400`) fails on it ("empty URI
# in redirect to named location") with nginx's HTML 500. An `error_page` naming a URI
# redirects internally to that URI instead, which works before parsing succeeded.
UNPARSED = (400, 414, 494)
UNPARSED_PREFIX = "/_gateway/problem/"
SENT_AS = {494: 400}  # nginx's private code for "header too large"; clients get a 400
LINE_BUFFER = "8k"
"""nginx's `large_client_header_buffers` size: the longest request line or header line
it accepts (longer lines get the 414 or 494 problem). gunicorn's `--limit-request-line`
(topology.py) is set to 8190, its maximum, so whatever nginx passes on gunicorn reads."""


@dataclass(frozen=True)
class GatewayOptions:
    """What differs between the local gateway and the containerised one."""

    listen: str
    """nginx `listen` argument: `127.0.0.1:8080` locally, `8080` in a container."""
    resolver: str | None = None
    """DNS server to re-resolve upstream names (compose's 127.0.0.11); None = resolve once."""


def upstream_name(svc: Service) -> str:
    return f"chancery_{svc.slug}"


def problem_body(status: int) -> str:
    """The JSON problem document nginx returns itself; single-quote-free for nginx."""
    slug, title, detail = PROBLEMS[status]
    body = {"type": f"urn:chancery:problem:gateway:{slug}", "title": title,
            "status": SENT_AS.get(status, status),
            "detail": detail, "code": slug}  # `code`: as every service's problem has
    return json.dumps(body, separators=(",", ":"))


def _upstreams(topology: Topology, options: GatewayOptions) -> list[str]:
    lines: list[str] = []
    for svc in topology.services:
        host, port = topology.addressing.web_host(svc), topology.ports.service(svc)
        lines.append(f"upstream {upstream_name(svc)} {{")
        if options.resolver:
            # A restarted container gets a new address; `resolve` follows it (nginx >= 1.27.3).
            lines.append(f"    zone {upstream_name(svc)} 64k;")
            lines.append(f"    server {host}:{port} resolve;")
        else:
            lines.append(f"    server {host}:{port};")
        lines += ["    keepalive 16;", "}", ""]
    return lines


def _service_locations(svc: Service) -> list[str]:
    """Routes of one service; proxy_pass without a URI passes the full path unchanged."""
    target = f"http://{upstream_name(svc)}"
    lines = [
        f"    # {svc.name}",
        f"    location = {svc.metrics_path} {{",
        "        allow 127.0.0.1;",
        "        deny all;",
        f"        proxy_pass {target};",
        "    }",
    ]
    for prefix in svc.prefixes:
        lines += [f"    location {prefix} {{", f"        proxy_pass {target};", "    }"]
    return lines + [""]


def _problem_target(status: int) -> str:
    """Where `error_page` sends a status: a named location, or a URI (see UNPARSED)."""
    return f"{UNPARSED_PREFIX}{status}" if status in UNPARSED else f"@problem_{status}"


def _problem_locations() -> list[str]:
    lines: list[str] = []
    for status in sorted(PROBLEMS):
        target = _problem_target(status)
        lines.append(f"    location {target} {{" if target.startswith("@")
                     else f"    location = {target} {{")
        if not target.startswith("@"):
            lines.append("        internal;")  # a client asking for it gets the 404 problem
        lines += [
            "        types { }",
            "        default_type application/problem+json;",
            "        add_header X-Request-Id $chancery_request_id always;",
            f"        return {SENT_AS.get(status, status)} '{problem_body(status)}';",
            "    }",
        ]
    return lines


def render_gateway(topology: Topology, options: GatewayOptions) -> str:
    """The http-context part of the gateway configuration, shared by local and compose."""
    lines = [
        "# Chancery gateway - generated by `chancery-stack` from chancery_deploy/topology.py;",
        "# edit the topology, not this file.",
        "",
        "# Keep a well-formed client request id (the services' own rule), otherwise mint one.",
        "map $http_x_request_id $chancery_request_id {",
        "    default $request_id;",
        '    "~^[A-Za-z0-9._-]{1,128}$" $http_x_request_id;',
        "}",
        "",
        "map $http_host $chancery_host {",
        '    "" $host;',
        "    default $http_host;",
        "}",
        "",
    ]
    if options.resolver:
        lines += [f"resolver {options.resolver} valid=10s ipv6=off;", ""]
    lines += _upstreams(topology, options)
    lines += [
        "server {",
        f"    listen {options.listen};",
        "    server_name _;",
        "    server_tokens off;",
        "",
        "    client_max_body_size 1m;",
        "    client_body_buffer_size 1m;",
        f"    large_client_header_buffers 4 {LINE_BUFFER};",
        "    proxy_max_temp_file_size 0;",
        "",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $chancery_host;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $chancery_host;",
        "    proxy_set_header X-Request-Id $chancery_request_id;",
        "    proxy_connect_timeout 5s;",
        "    proxy_send_timeout 60s;",
        "    proxy_read_timeout 60s;",
        "    proxy_next_upstream off;",
        "",
        "    # Errors nginx produces itself; a service's own errors pass through untouched.",
    ]
    lines += [f"    error_page {status} {_problem_target(status)};" for status in sorted(PROBLEMS)]
    lines.append("")
    for svc in topology.services:
        lines += _service_locations(svc)
    lines += [
        "    location / {",
        "        return 404;",
        "    }",
        "",
    ]
    lines += _problem_locations()
    lines += ["}", ""]
    return "\n".join(lines)


def render_local_nginx_conf(topology: Topology, stack_dir: Path, run_as_root: bool) -> str:
    """A complete nginx.conf for `nginx -p <stack>/nginx -c ... ` run in the foreground.

    Everything nginx writes (pid, logs, temp files) stays under the stack directory.
    As root, workers run as root too: every other stack process does, and dropping to
    `nobody` would leave the workers unable to reach a var dir under a private path.
    """
    nginx_dir, logs = stack_dir / "nginx", stack_dir / "logs"
    temp = nginx_dir / "temp"
    head = [
        "# Generated by `chancery-stack up`; rewritten on every start.",
        "daemon off;",
        "master_process on;",
        "worker_processes 2;",
        f"pid {nginx_dir / 'nginx.pid'};",
        f"error_log {logs / 'nginx-error.log'} warn;",
    ]
    if run_as_root:
        head.append("user root root;")
    head += [
        "",
        "events {",
        "    worker_connections 1024;",
        "}",
        "",
        "http {",
        "    default_type application/octet-stream;",
        f"    access_log {logs / 'nginx-access.log'};",
        f"    client_body_temp_path {temp / 'client_body'};",
        f"    proxy_temp_path {temp / 'proxy'};",
        f"    fastcgi_temp_path {temp / 'fastcgi'};",
        f"    uwsgi_temp_path {temp / 'uwsgi'};",
        f"    scgi_temp_path {temp / 'scgi'};",
        "",
    ]
    gateway = render_gateway(topology, GatewayOptions(listen=f"127.0.0.1:{topology.ports.gateway}"))
    body = ["    " + line if line else "" for line in gateway.splitlines()]
    return "\n".join(head + body + ["}", ""])


def render_compose_nginx_conf(topology: Topology) -> str:
    """The conf.d file for the official nginx image (which supplies the http block)."""
    return render_gateway(topology, GatewayOptions(listen=str(topology.ports.gateway),
                                                   resolver="127.0.0.11"))
