"""HTTP triggers: route templates -> a WSGI app that builds ``func.HttpRequest`` and returns the ``HttpResponse``.

Route templates follow the host's (ASP.NET) syntax, the parts a Functions app uses: literal segments (matched
case-insensitively), ``{name}``, ``{name:int|long|guid|alpha|bool}``, a trailing optional ``{name?}`` and a
trailing catch-all ``{*name}``. Literal routes win over parameterised ones, as in ASP.NET's route precedence; ``int``
and ``long`` match what .NET parses into an int32 / int64 (a longer number is a 404, as in Azure).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import azure.functions as func
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from devtools.local_host_invoke import invoke

log = logging.getLogger("devtools.local_host")

_HTTP_REASON = "This function was programmatically called via the host APIs."
_PARAMETER = re.compile(r"^\{(?P<star>\*)?(?P<name>[A-Za-z_]\w*)(?::(?P<kind>\w+))?(?P<optional>\?)?\}$")
_CONSTRAINTS = {
    None: r"[^/]+",
    # What .NET's int.TryParse / long.TryParse read (InvariantCulture): ASCII digits with a sign; the range is
    # checked after the match (_RANGES), as ASP.NET's IntRouteConstraint / LongRouteConstraint do by parsing.
    "int": r"[-+]?[0-9]+",
    "long": r"[-+]?[0-9]+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
}


_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _within(text: str, bounds: tuple[int, int]) -> bool:
    """Whether a matched int/long parameter is within its type (before int(): Python refuses 4,300+ digits)."""
    digits = text.lstrip("+-").lstrip("0")
    return len(digits) <= 19 and bounds[0] <= int(text) <= bounds[1]


# A path as ASP.NET Core's PathString.ToUriComponent writes it: a valid %XX escape and these characters stay as they
# are; any other character is escaped as UTF-8 (Uri.EscapeDataString).
_PATH_CHARACTER = re.compile(r"(%[0-9A-Fa-f]{2}|[A-Za-z0-9!$&'()*+,\-./:;=@_~])|.", re.DOTALL)
_ENCODED_SLASH = re.compile("(%2F)", re.IGNORECASE)  # captured: split() keeps it


def raw_target(environ: dict[str, Any]) -> str:
    """The request target as the client sent it (werkzeug keeps it in RAW_URI: latin-1 over UTF-8 over the bytes);
    bytes outside printable ASCII, which a conforming client never sends, percent-escaped."""
    text = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not text:
        query = environ.get("QUERY_STRING", "")
        return quote(environ.get("PATH_INFO", ""), safe="/") + (f"?{query}" if query else "")
    sent = text.encode("latin-1").decode("utf-8", "replace").encode("latin-1", "replace")
    target = quote(sent, safe="".join(map(chr, range(0x21, 0x7F))))
    if target.startswith(("http://", "https://")):  # the absolute form: keep the path and query
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    return target


def host_url(scheme: str, host: str, target: str) -> str:
    """The URL Azure's Functions host hands the worker: ``{scheme}://{Host}{Path}{QueryString}`` (azure-functions-host,
    ``GrpcMessageConversionExtensions.ToRpcHttp``), Path being Kestrel's path (every escape decoded but ``%2F``) as
    PathString writes it, QueryString the query as sent. werkzeug's ``request.url`` is an IRI instead (escapes of
    non-ASCII and of some ASCII decoded): a signature check must see here what it sees in Azure.
    """
    path, mark, query = target.partition("?")
    decoded = "".join(p if _ENCODED_SLASH.fullmatch(p) else unquote(p) for p in _ENCODED_SLASH.split(path))
    escaped = _PATH_CHARACTER.sub(lambda m: m[1] or quote(m[0], safe="", errors="replace"), decoded)
    return f"{scheme}://{host}{escaped}{mark}{query}"


# Query parameters that are credentials (a connect link's signature, an OAuth code answered on a query) or personal
# data (the connect link's login_hint, a mailbox address: no address in any log line, issue 14).
SECRET_PARAMETERS = ("sig", "code", "login_hint")
_SECRET_VALUE = re.compile(rf"([?&](?:{'|'.join(SECRET_PARAMETERS)})=)[^&\s#]*", re.IGNORECASE)


def redact(request_line: str) -> str:
    """A request line with the values of ``SECRET_PARAMETERS`` replaced, fit for a log."""
    return _SECRET_VALUE.sub(r"\1REDACTED", request_line)


class RedactingRequestHandler(WSGIRequestHandler):
    """Logs each request line as werkzeug does, less the credentials in its query."""

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, message, *(redact(a) if isinstance(a, str) else a for a in args))


class RouteError(ValueError):
    """A route template the local host cannot serve; the message names the function and the template."""


@dataclass(frozen=True)
class HttpRoute:
    function_name: str
    template: str
    methods: frozenset[str] | None  # None: every method
    pattern: re.Pattern[str]
    parameters: int
    arg_name: str
    user_function: Callable[..., Any]
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # int/long parameters and their bounds

    def accepts(self, match: re.Match[str]) -> bool:
        """Whether the matched int/long parameters are within their types (else the route does not match)."""
        return all(match[name] is None or _within(match[name], bounds) for name, bounds in self.ranges.items())


def compile_route(function_name: str, template: str) -> tuple[re.Pattern[str], int]:
    """The regex for a template (below the route prefix) and how many parameters it has."""
    segments = [s for s in template.strip("/").split("/") if s]
    parts: list[str] = []
    parameters = 0
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        match = _PARAMETER.match(segment)
        if match is None:
            if "{" in segment or "}" in segment:
                raise RouteError(
                    f"Functions.{function_name}: route {template!r}: segment {segment!r} mixes text "
                    "and parameters, which the local host does not serve"
                )
            parts.append("/" + re.escape(segment))
            continue
        parameters += 1
        name, kind = match["name"], match["kind"]
        if kind not in _CONSTRAINTS:
            raise RouteError(f"Functions.{function_name}: route {template!r}: constraint {kind!r} is not supported")
        if (match["star"] or match["optional"]) and not last:
            raise RouteError(f"Functions.{function_name}: route {template!r}: {segment} must be the last segment")
        if match["star"]:
            parts.append(f"(?:/(?P<{name}>.*))?")
        elif match["optional"]:
            parts.append(f"(?:/(?P<{name}>{_CONSTRAINTS[kind]}))?")
        else:
            parts.append(f"/(?P<{name}>{_CONSTRAINTS[kind]})")
    return re.compile("".join(parts) + "/?", re.IGNORECASE), parameters


def http_route(function: Any) -> HttpRoute:
    """The route of an indexed HTTP-trigger function (``azure.functions`` ``Function``)."""
    trigger = function.get_trigger().get_dict_repr()
    name = function.get_function_name()
    template = trigger.get("route") or name
    pattern, parameters = compile_route(name, template)
    methods = trigger.get("methods")
    return HttpRoute(
        function_name=name,
        template=template,
        methods=frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None,
        pattern=pattern,
        parameters=parameters,
        arg_name=trigger["name"],
        user_function=function.get_user_function(),
        ranges=route_ranges(template),
    )


def route_ranges(template: str) -> dict[str, tuple[int, int]]:
    """The template's int and long parameters and their bounds."""
    kinds = (_PARAMETER.match(segment) for segment in template.strip("/").split("/"))
    return {m["name"]: _RANGES[m["kind"]] for m in kinds if m and m["kind"] in _RANGES}


class HttpDispatcher:
    """The WSGI app: ``/<routePrefix>/<route>`` -> the function's ``HttpResponse``."""

    def __init__(self, routes: Iterable[HttpRoute], route_prefix: str) -> None:
        self.routes: Sequence[HttpRoute] = sorted(routes, key=lambda r: r.parameters)
        self._prefix = "/" + route_prefix if route_prefix else ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self._respond(request)(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        if self._prefix and not (path.lower() == self._prefix or path.lower().startswith(self._prefix + "/")):
            return Response(status=404)
        below = path[len(self._prefix) :]
        matches = [(r, m) for r in self.routes if (m := r.pattern.fullmatch(below)) and r.accepts(m)]
        if not matches:
            return Response(status=404)
        allowed = [(r, m) for r, m in matches if r.methods is None or request.method in r.methods]
        if not allowed:
            methods = sorted({m for r, _ in matches for m in (r.methods or ())})
            return Response(status=405, headers={"Allow": ", ".join(methods)})
        route, match = allowed[0]
        return self._call(route, request, {k: v for k, v in match.groupdict().items() if v is not None})

    def _call(self, route: HttpRoute, request: Request, route_params: dict[str, str]) -> Response:
        def bind() -> dict[str, Any]:
            http_request = func.HttpRequest(
                method=request.method,
                url=host_url(request.scheme, request.host, raw_target(request.environ)),
                headers=dict(request.headers.items()),
                params=request.args.to_dict(),
                route_params=route_params,
                body=request.get_data(),
            )
            return {route.arg_name: http_request}

        try:
            result = invoke(route.function_name, _HTTP_REASON, route.user_function, bind)
        except Exception:  # logged by invoke; the host answers a bare 500
            return Response(status=500)
        return to_werkzeug(route.function_name, result)


def to_werkzeug(function_name: str, result: Any) -> Response:
    """An ``HttpResponse`` (or a ``str``, which the Python worker also accepts) as a werkzeug response."""
    if isinstance(result, str):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        log.error("Functions.%s returned %s, not an HttpResponse", function_name, type(result).__name__)
        return Response(status=500)
    headers = dict(result.headers.items())
    if not any(k.lower() == "content-type" for k in headers) and result.mimetype:
        # mimetype= is not in .headers (docs/offline-toolchain.md); the host sends it as Content-Type with the charset.
        headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}" if result.charset else result.mimetype
    return Response(result.get_body(), status=result.status_code, headers=headers)
