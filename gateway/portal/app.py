"""The public enterprise lookup page (企业信用信息公示查询): a Starlette application.

Anyone, without an account or a cookie, types an enterprise's unified social credit code and
sees its public-tier credit records and its list status, in Chinese; nothing about persons.
The page is its own agency of the gateway (``portal`` in ``policies/agencies.toml``: public
tier only, free mode, purpose ``public_lookup``) and asks it through a
:class:`~gateway.portal.sources.CreditSource`.

Routes::

    GET  /                               the lookup form
    POST /lookup                         form field ``code`` -> 303 to /enterprise/<CODE>,
                                         or the form again with a Chinese message (400)
    GET  /enterprise/<CODE>              the enterprise's page (404: no department knows it)
    GET  /enterprise/<CODE>/report.pdf   the signed credit report (issue 15 item 2), and
    GET  /enterprise/<CODE>/report.json  its JSON form, where the gateway offers reports
    GET  /static/portal.css              the style sheet
    GET  /healthz                        "ok" (for a load balancer; asks nothing)

Why a POST form: what a visitor types stays out of URLs (browser history, proxies' logs),
and a resident identity number typed by mistake is refused there, before any redirect
could put it into one. The result page is a plain GET, so it can be bookmarked and shared.

Promises, each tested (``tests/unit/portal/``, ``tests/integration/test_portal_browser.py``):

* every lookup and report download of a client address takes a token of its bucket
  (:class:`~gateway.portal.limiter.ClientLimiter`); without one: 429 with ``Retry-After``,
  and the gateway is not asked;
* a bad code or personal data is answered 400 with a message saying what to fix; personal
  data is never repeated, not even in the form field;
* no response sets a cookie; every response carries a Content-Security-Policy that allows
  no script at all (the page needs none) and no framing, ``nosniff``, ``no-referrer``;
  result pages are ``no-store`` (list status changes);
* everything shown passes through Jinja2's autoescaping (department data included);
* the gateway unreachable, too slow or refusing the portal: 503 (``Retry-After`` where the
  gateway said); never a traceback;
* no access log line holds a client address or a code (``gateway.portal`` logs the route
  with ``{code}``, the status and the milliseconds).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.domain.catalog import Catalog
from gateway.portal.codes import CodeCheck, check_code
from gateway.portal.limiter import ClientLimiter, retry_after_header
from gateway.portal.sources import (
    CreditSource,
    PortalUpstreamError,
    ReportSource,
    ReportsUnavailableError,
)
from gateway.portal.view import enterprise_view
from gateway.screening.measures import MeasuresCatalog, load_measures

__all__ = ["SECURITY_HEADERS", "create_app"]

_log = logging.getLogger("gateway.portal")

#: Sent with every response. No script runs on the page, so none is allowed; forms post
#: only to the page itself; nothing may frame it (clickjacking).
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
#: The largest form body read (bytes): one code and a little more.
MAX_FORM_BYTES: Final = 4096
_HTML: Final = "text/html; charset=utf-8"
_TEMPLATES: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.portal", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class _Headers:
    """ASGI middleware: the security headers on every response, and one log line per
    request that holds no client address and no code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"set-cookie"
                ]
                names = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in names:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _log.info(
                "%s %s %d %.0f ms",
                scope["method"],
                _route_of(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )


def _route_of(path: str) -> str:
    """The path with the code left out, for the log."""
    if path.startswith("/enterprise/"):
        rest = path.removeprefix("/enterprise/")
        _, slash, tail = rest.partition("/")
        return "/enterprise/{code}" + (
            slash + tail if tail in ("report.pdf", "report.json") else ""
        )
    if path in ("/", "/lookup", "/healthz") or path.startswith("/static/"):
        return path
    return "(other)"


def _page(
    template: str, status: int = 200, headers: Mapping[str, str] | None = None, **context: Any
) -> Response:
    context.setdefault("message", "")  # the form's own message (a refused input)
    context.setdefault("echo", "")  # what the form field shows again
    body = _TEMPLATES.get_template(template).render(**context)
    out = Response(body, status_code=status, media_type=_HTML, headers=dict(headers or {}))
    out.headers["cache-control"] = "no-store"
    return out


def _form_page(check: CodeCheck | None = None, status: int = 200) -> Response:
    return _page(
        "index.html",
        status,
        message=check.message if check else "",
        echo=check.echo if check else "",
    )


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _too_many(wait_s: float) -> Response:
    retry = retry_after_header(wait_s)
    return _page(
        "error.html",
        429,
        {"retry-after": retry},
        title="查询过于频繁",
        problem=f"您的查询过于频繁，请在 {retry} 秒后再试。",
    )


def _unavailable(exc: PortalUpstreamError) -> Response:
    headers = {}
    if exc.retry_after_s is not None:
        headers["retry-after"] = retry_after_header(exc.retry_after_s)
    message = "查询服务繁忙，请稍后再试。" if exc.busy else "查询服务暂时不可用，请稍后再试。"
    return _page("error.html", 503, headers, title="服务暂时不可用", problem=message)


def create_app(
    *,
    source: CreditSource,
    reports: ReportSource,
    catalog: Catalog,
    limiter: ClientLimiter,
    measures: MeasuresCatalog | None = None,
) -> ASGIApp:
    """The page as an ASGI application (serve it with uvicorn: :mod:`gateway.portal.serve`).

    ``source`` answers lookups, ``reports`` gives reports (:class:`NoReports`: no download
    link), ``catalog`` titles departments, datasets and fields, ``limiter`` limits each
    client address, ``measures`` says which datasets are lists (default: the packaged
    ``policies/measures.toml``). Never raises for a request: every failure is a page in
    Chinese.

    Raises:
        ConfigError: the packaged measures catalog does not load (at creation, not later).
    """
    lists = measures if measures is not None else load_measures(catalog=catalog)

    async def index(request: Request) -> Response:
        return _form_page()

    async def lookup(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return _form_page(CodeCheck(None, "请通过查询框提交统一社会信用代码。"), 400)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return _form_page(CodeCheck(None, "输入过长：统一社会信用代码为18位。"), 413)
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return _form_page(CodeCheck(None, "无法识别您提交的内容，请重新输入。"), 400)
        check = check_code(form.get("code", [""])[0])
        if check.code is None:
            return _form_page(check, 400)
        return RedirectResponse(f"/enterprise/{check.code}", status_code=303)

    async def enterprise(request: Request) -> Response:
        check = check_code(request.path_params["code"])
        if check.code is None:
            return _form_page(check, 400)
        if check.code != request.path_params["code"]:
            return RedirectResponse(f"/enterprise/{check.code}", status_code=301)
        wait = limiter.admit(_client(request))
        if wait > 0:
            return _too_many(wait)
        try:
            response = await source.lookup(check.code)
        except PortalUpstreamError as exc:
            return _unavailable(exc)
        view = enterprise_view(check.code, response, catalog, lists)
        status = 404 if not view.found and not view.incomplete else 200
        return _page(
            "enterprise.html",
            status,
            view=view,
            reports_available=reports.available and view.found,
            echo=check.code,
            message="",
        )

    async def report(request: Request) -> Response:
        check = check_code(request.path_params["code"])
        form = request.path_params["form"]
        if check.code is None:
            return _form_page(check, 400)
        if form not in ("pdf", "json"):
            raise HTTPException(404)
        if check.code != request.path_params["code"]:
            return RedirectResponse(f"/enterprise/{check.code}/report.{form}", status_code=301)
        if not reports.available:
            return _page(
                "error.html",
                404,
                title="暂不提供信用报告下载",
                problem="本查询服务暂不提供信用报告下载。",
            )
        wait = limiter.admit(_client(request))
        if wait > 0:
            return _too_many(wait)
        try:
            document = await reports.report(check.code, form)
        except ReportsUnavailableError:
            return _page(
                "error.html",
                404,
                title="暂不提供信用报告下载",
                problem="本查询服务暂不提供信用报告下载。",
            )
        except PortalUpstreamError as exc:
            return _unavailable(exc)
        return Response(
            document.content,
            media_type=document.media_type,
            headers={
                "content-disposition": f'attachment; filename="{document.filename}"',
                "cache-control": "no-store",
            },
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if code == 405:
            return _page("error.html", 405, title="不支持的请求", problem="不支持该请求方式。")
        if code == 404:
            return _page("error.html", 404, title="页面不存在", problem="您访问的页面不存在。")
        return _page("error.html", code, title="请求有误", problem="请求有误。")

    async def server_error(request: Request, exc: Exception) -> Response:
        _log.error("portal error: %s", type(exc).__name__)
        return _page("error.html", 500, title="服务出错", problem="查询服务出错，请稍后再试。")

    static = StaticFiles(packages=[("gateway.portal", "static")])
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/lookup", lookup, methods=["POST"]),
            Route("/enterprise/{code}", enterprise, methods=["GET"]),
            Route("/enterprise/{code}/report.{form}", report, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Mount("/static", app=static, name="static"),
        ],
        exception_handlers={HTTPException: not_found, Exception: server_error},
    )
    # Outside Starlette's own error middleware, so that a 500 page carries the headers too.
    return _Headers(app)
