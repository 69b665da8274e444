"""The public lookup page in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, against the page served by uvicorn, asking the real gateway of a whole
development federation as the ``portal`` agency over mutual TLS.

A visitor looks a code up and sees the sections; a bad code and a resident identity number
get clear messages; the rate limit answers 429 with Retry-After; the report download is a
signed report that checks offline. Screenshots are kept as test artifacts under the test's
temporary folder (their paths are printed; nothing is committed).

Chromium is Debian's (``.ci/run`` installs it, with CJK fonts, where missing); Playwright
drives it through ``executable_path`` and downloads no browser. Without it the tests say
NOT RUN.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.audit.note import load_verifiers
from gateway.audit.reportcheck import check_report
from gateway.dev.devstack import DevStack
from gateway.portal import PortalConfig, PortalServer
from tests.integration.conftest import subject

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: What the issue asks of a headless Chromium run as root in CI.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BURST = 4


def _chromium_or_skip() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.skip("NOT RUN: the browser test needs Debian's chromium (.ci/run installs it)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("NOT RUN: the browser test needs playwright (pip install -e '.[dev]')")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One Chromium for the module, with a fresh profile folder of its own."""
    executable = _chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            locale="zh-CN",
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def portal(stack: DevStack) -> AsyncIterator[PortalServer]:
    """A page of its own per test (its own rate-limit buckets), asking the module's gateway."""
    server = await PortalServer.start(
        PortalConfig(
            listen="127.0.0.1:0",
            gateway=stack.gateway.address,
            ca=stack.pki.ca_cert,
            cert=stack.pki.agency_cert("portal"),
            key=stack.pki.agency_key("portal"),
            token_file=stack.tokens["portal"],
            rate_per_minute=1,  # no token comes back within a test
            burst=BURST,
        )
    )
    try:
        yield server
    finally:
        await server.stop()


def _shot(path: Path) -> Path:
    print(f"\nscreenshot: {path}")
    return path


async def _new_page(browser: Any) -> tuple[Any, list[str]]:
    page = await browser.new_page()
    problems: list[str] = []
    # A CSP violation or a failed style sheet shows up as a console error.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return page, problems


async def test_look_up_a_code_and_see_the_sections(
    browser: Any, portal: PortalServer, stack: DevStack, tmp_path: Path
) -> None:
    code = subject(stack, "enterprise_all_departments")
    name = stack.subjects["enterprise_all_departments"]["name"]
    page, problems = await _new_page(browser)
    first = await page.goto(portal.url)
    assert first.status == 200
    await page.fill("#code", f" {code.lower()} ")
    async with page.expect_navigation() as nav:
        await page.click("#submit")
    response = await nav.value
    assert response.status == 200
    assert page.url == f"{portal.url}enterprise/{code}"
    assert await page.text_content("#name") == name
    assert await page.text_content("#subject-code") == code
    lists = await page.inner_text("#lists")
    for title in ("失信被执行人名单", "经营异常名录", "纳税信用A级纳税人名单"):
        assert title in lists
    assert any(s in lists for s in ("已列入", "未列入"))
    records = await page.inner_text("#records")
    for department in ("市场监督管理局", "人民法院", "税务局"):
        assert department in records
    assert "企业登记信息" in records and "企业名称" in records
    assert "中国人民银行征信中心：无依法可向社会公示的信息" in records
    # The style sheet loaded under the Content-Security-Policy, and nothing was refused.
    colour = await page.eval_on_selector("header.site h1 a", "e => getComputedStyle(e).color")
    assert colour == "rgb(200, 16, 46)"
    assert problems == []
    assert await browser.cookies() == []
    await page.screenshot(path=_shot(tmp_path / "portal-enterprise.png"), full_page=True)
    await page.close()


async def test_a_bad_code_and_a_person_get_clear_messages(
    browser: Any, portal: PortalServer, tmp_path: Path
) -> None:
    page, _ = await _new_page(browser)
    await page.goto(portal.url)
    await page.fill("#code", "91110000600037341M")
    async with page.expect_navigation() as nav:
        await page.click("#submit")
    assert (await nav.value).status == 400
    message = await page.text_content("#message")
    assert message is not None and "校验码（第18位）与前17位不符" in message
    assert await page.input_value("#code") == "91110000600037341M"  # kept for correction
    await page.screenshot(path=_shot(tmp_path / "portal-bad-code.png"))

    person = "360426199101010071"
    await page.fill("#code", person)
    async with page.expect_navigation() as nav:
        await page.click("#submit")
    assert (await nav.value).status == 400
    message = await page.text_content("#message")
    assert message is not None and "不查询个人信息" in message
    assert await page.input_value("#code") == ""
    assert person not in await page.content()
    assert "/lookup" in page.url  # never redirected to a URL holding the number
    await page.close()


async def test_the_rate_limit_answers_429_with_retry_after(
    browser: Any, portal: PortalServer, stack: DevStack, tmp_path: Path
) -> None:
    code = subject(stack, "enterprise_all_departments")
    page, _ = await _new_page(browser)
    statuses = []
    for _ in range(BURST + 1):
        response = await page.goto(f"{portal.url}enterprise/{code}")
        statuses.append(response.status)
    assert statuses == [200] * BURST + [429]
    assert int(response.headers["retry-after"]) >= 1
    assert "查询过于频繁" in await page.inner_text("#problem")
    await page.screenshot(path=_shot(tmp_path / "portal-429.png"))
    # The form and bad codes still answer: only lookups take tokens.
    assert (await page.goto(portal.url)).status == 200
    await page.close()


async def test_the_report_download_is_a_signed_report_that_checks(
    browser: Any, portal: PortalServer, stack: DevStack, tmp_path: Path
) -> None:
    code = subject(stack, "enterprise_all_departments")
    page, _ = await _new_page(browser)
    await page.goto(f"{portal.url}enterprise/{code}")
    async with page.expect_download() as info:
        await page.click("#report-pdf")
    download = await info.value
    assert download.suggested_filename == f"credit-report-{code}.pdf"
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    checked = check_report(saved.read_bytes(), load_verifiers(stack.audit["verifier_key"]))
    assert checked.content["subject"]["id"] == code
    print(f"\nreport: {saved}")
    await page.close()


async def test_a_plain_http_client_sees_the_same_headers(portal: PortalServer) -> None:
    def get() -> Any:
        with urllib.request.urlopen(portal.url, timeout=10) as r:  # noqa: S310 - loopback
            return r.status, dict(r.headers)

    import asyncio

    status, headers = await asyncio.to_thread(get)
    assert status == 200
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "set-cookie" not in {k.lower() for k in headers}
    assert "server" not in {k.lower() for k in headers}


async def _start(stack: DevStack, **settings: Any) -> PortalServer:
    base: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "gateway": stack.gateway.address,
        "ca": stack.pki.ca_cert,
        "cert": stack.pki.agency_cert("portal"),
        "key": stack.pki.agency_key("portal"),
        "token_file": stack.tokens["portal"],
        "rate_per_minute": 1,
    }
    return await PortalServer.start(PortalConfig(**(base | settings)))


async def _status(url: str, forwarded_for: str | None = None) -> int:
    import asyncio
    import urllib.error

    def get() -> int:
        request = urllib.request.Request(url)  # noqa: S310 - loopback
        if forwarded_for:
            request.add_header("X-Forwarded-For", forwarded_for)
        try:
            with urllib.request.urlopen(request, timeout=20) as r:  # noqa: S310 - loopback
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(get)


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    stack: DevStack,
) -> None:
    code = subject(stack, "enterprise_all_departments")
    server = await _start(stack, burst=1, trusted_proxies=("127.0.0.1",))
    try:
        page = f"{server.url}enterprise/{code}"
        assert await _status(page, "203.0.113.1") == 200
        assert await _status(page, "203.0.113.1") == 429
        assert await _status(page, "203.0.113.2") == 200
    finally:
        await server.stop()


async def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(stack: DevStack) -> None:
    code = subject(stack, "enterprise_all_departments")
    server = await _start(stack, burst=1)
    try:
        page = f"{server.url}enterprise/{code}"
        assert await _status(page, "203.0.113.1") == 200
        assert await _status(page, "203.0.113.2") == 429  # the same client, whatever it says
    finally:
        await server.stop()


async def test_a_valid_code_nobody_knows_is_404_in_chinese(stack: DevStack) -> None:
    server = await _start(stack, burst=2)
    try:
        assert await _status(f"{server.url}enterprise/91110000600037341L") == 404
    finally:
        await server.stop()


async def test_a_token_file_that_changes_is_read_again(stack: DevStack, tmp_path: Path) -> None:
    code = subject(stack, "enterprise_all_departments")
    token = tmp_path / "portal.jwt"
    token.write_text("not-a-token\n", encoding="utf-8")
    server = await _start(stack, burst=5, token_file=token)
    try:
        page = f"{server.url}enterprise/{code}"
        assert await _status(page) == 503  # the gateway refuses the portal: the page says so
        token.write_text(stack.tokens["portal"].read_text(encoding="utf-8"), encoding="utf-8")
        assert await _status(page) == 200  # no restart
    finally:
        await server.stop()
