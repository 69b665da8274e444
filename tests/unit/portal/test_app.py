"""The public page under Starlette's test client, with fakes of its seams."""

from __future__ import annotations

import logging

import pytest

from gateway.domain.catalog import Catalog
from gateway.portal.app import SECURITY_HEADERS
from gateway.portal.sources import PortalUpstreamError, ReportsUnavailableError
from tests.unit.portal.fakes import (
    CODE,
    FakeReports,
    Portal,
    answer,
    make_portal,
    section,
    text,
)

PERSON = "360426199101010071"


def _assert_headers(response) -> None:  # type: ignore[no-untyped-def]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert "set-cookie" not in response.headers
    assert "script-src" not in response.headers["content-security-policy"]
    assert "'none'" in response.headers["content-security-policy"]
    assert "server" not in response.headers


def test_the_form_page_has_the_form_and_the_security_headers(portal: Portal) -> None:
    r = portal.client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert 'action="/lookup"' in r.text and 'method="post"' in r.text
    assert "<script" not in r.text
    _assert_headers(r)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", f"/enterprise/{CODE}"),
        ("GET", "/enterprise/123"),
        ("GET", "/static/portal.css"),
        ("GET", "/nowhere"),
        ("GET", "/lookup"),
        ("POST", "/lookup"),
        ("GET", "/healthz"),
    ],
)
def test_every_response_has_the_headers_and_no_cookie(
    portal: Portal, method: str, path: str
) -> None:
    _assert_headers(portal.client.request(method, path))


def test_a_valid_code_is_redirected_to_its_page(portal: Portal) -> None:
    r = portal.client.post("/lookup", data={"code": " 91350200ma2yj1xr9g "})
    assert r.status_code == 303
    assert r.headers["location"] == f"/enterprise/{CODE}"
    assert portal.source.asked == []  # the redirect asks nobody yet


def test_a_bad_code_gets_a_clear_message_and_is_kept_for_correction(portal: Portal) -> None:
    r = portal.client.post("/lookup", data={"code": "91110000600037341M"})
    assert r.status_code == 400
    assert "校验码（第18位）与前17位不符" in r.text
    assert 'value="91110000600037341M"' in r.text
    assert portal.source.asked == []


def test_a_resident_identity_number_is_refused_and_never_echoed(portal: Portal) -> None:
    for path, kwargs in (("/lookup", {"data": {"code": PERSON}}), (f"/enterprise/{PERSON}", {})):
        method = "POST" if path == "/lookup" else "GET"
        r = portal.client.request(method, path, **kwargs)
        assert r.status_code == 400
        assert "不查询个人信息" in r.text
        assert PERSON not in r.text
        assert "location" not in r.headers
    assert portal.source.asked == []


def test_the_enterprise_page_shows_name_lists_and_records(portal: Portal) -> None:
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    assert "厦门示例科技有限公司" in page
    assert "红黑名单状态" in page and "公开信用记录" in page
    assert "失信被执行人名单" in page and "已列入（2025-06-01 起）" in page
    assert "经营异常名录" in page and "未列入" in page
    assert "5,000.00 元" in page and "1,234.56 元" in page
    assert "【有异议，核查中】" in page
    assert "另有 2 条失信记录已超过五年期限" in page
    assert "中国人民银行征信中心：无依法可向社会公示的信息" in page
    assert "第 41 条" in page
    assert portal.source.asked == [CODE]


def test_department_data_is_escaped(portal: Portal) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    portal.source.answer = lambda code: answer(
        section("market", registration=[{"name": text(evil)}])
    )
    page = portal.client.get(f"/enterprise/{CODE}").text
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_an_unknown_enterprise_is_404_with_a_message(portal: Portal) -> None:
    portal.source.answer = lambda code: answer(
        section("market", registration=[]), section("court", 2)
    )
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 404
    assert "未查询到该企业的公开信用信息" in r.text


def test_a_department_down_says_the_page_may_be_incomplete(portal: Portal) -> None:
    portal.source.answer = lambda code: answer(section("market", 3), section("court", 4))
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 200
    assert "以下信息可能不完整" in r.text
    assert "暂无法确认" in r.text


def test_lower_case_codes_are_redirected_to_the_canonical_page(portal: Portal) -> None:
    r = portal.client.get(f"/enterprise/{CODE.lower()}")
    assert r.status_code == 301
    assert r.headers["location"] == f"/enterprise/{CODE}"
    assert portal.source.asked == []


def test_the_rate_limit_answers_429_with_retry_after_and_asks_nobody(portal: Portal) -> None:
    for _ in range(5):
        assert portal.client.get(f"/enterprise/{CODE}").status_code == 200
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "6"  # one token every 6 s
    assert "查询过于频繁" in r.text and "6 秒后再试" in r.text
    assert len(portal.source.asked) == 5
    _assert_headers(r)
    portal.clock.now += 6
    assert portal.client.get(f"/enterprise/{CODE}").status_code == 200


def test_bad_codes_and_the_form_take_no_token(portal: Portal) -> None:
    for _ in range(20):
        portal.client.post("/lookup", data={"code": "123"})
        portal.client.get("/")
    assert portal.client.get(f"/enterprise/{CODE}").status_code == 200


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (PortalUpstreamError("x", status="UNAVAILABLE"), None),
        (PortalUpstreamError("x", status="PERMISSION_DENIED"), None),
        (PortalUpstreamError("x", status="RESOURCE_EXHAUSTED", busy=True, retry_after_s=2.5), "3"),
    ],
)
def test_the_gateway_failing_is_503_never_a_traceback(
    portal: Portal, error: PortalUpstreamError, retry: str | None
) -> None:
    portal.source.error = error
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 503
    assert r.headers.get("retry-after") == retry
    assert "稍后再试" in r.text
    assert "Traceback" not in r.text and error.status not in r.text


def test_a_bug_is_a_500_page_in_chinese_with_the_headers(portal: Portal) -> None:
    def boom(code: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("/secret/path exploded")

    portal.source.answer = boom
    r = portal.client.get(f"/enterprise/{CODE}")
    assert r.status_code == 500
    assert "查询服务出错" in r.text and "/secret/path" not in r.text
    _assert_headers(r)


def test_no_report_link_without_reports_and_the_download_says_so(portal: Portal) -> None:
    assert "report.pdf" not in portal.client.get(f"/enterprise/{CODE}").text
    r = portal.client.get(f"/enterprise/{CODE}/report.pdf")
    assert r.status_code == 404
    assert "暂不提供信用报告下载" in r.text


def test_reports_are_downloaded_as_attachments_within_the_rate_limit(catalog: Catalog) -> None:
    reports = FakeReports()
    p = make_portal(catalog, reports=reports, burst=2)
    page = p.client.get(f"/enterprise/{CODE}").text
    assert f'href="/enterprise/{CODE}/report.pdf"' in page
    r = p.client.get(f"/enterprise/{CODE}/report.pdf")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["content-disposition"] == f'attachment; filename="credit-report-{CODE}.pdf"'
    assert r.content.startswith(b"%PDF")
    assert p.client.get(f"/enterprise/{CODE}/report.json").status_code == 429
    assert reports.asked == [(CODE, "pdf")]
    assert p.client.get(f"/enterprise/{CODE}/report.txt").status_code == 404
    assert p.client.get(f"/enterprise/{PERSON}/report.pdf").status_code == 400


def test_a_report_the_gateway_cannot_make_is_a_page_not_a_traceback(catalog: Catalog) -> None:
    reports = FakeReports(error=ReportsUnavailableError("no service"))
    p = make_portal(catalog, reports=reports)
    assert p.client.get(f"/enterprise/{CODE}/report.pdf").status_code == 404
    reports.error = PortalUpstreamError("x", status="DEADLINE_EXCEEDED")
    assert p.client.get(f"/enterprise/{CODE}/report.json").status_code == 503


def test_odd_form_posts_are_refused_with_a_message(portal: Portal) -> None:
    assert (
        portal.client.post(
            "/lookup", content=b"code=1", headers={"content-type": "text/plain"}
        ).status_code
        == 400
    )
    big = portal.client.post(
        "/lookup",
        content=b"code=" + b"9" * 5000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413
    bad = portal.client.post(
        "/lookup",
        content=b"code=%ff%fe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code == 400
    assert portal.client.post("/lookup", data={}).status_code == 400


def test_unknown_paths_and_methods_are_chinese_pages(portal: Portal) -> None:
    r = portal.client.get("/admin")
    assert r.status_code == 404 and "页面不存在" in r.text
    r = portal.client.get("/lookup")
    assert r.status_code == 405 and "不支持该请求方式" in r.text


def test_the_log_holds_no_code_and_no_client_address(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.portal"):
        portal.client.get(f"/enterprise/{CODE}")
        portal.client.post("/lookup", data={"code": PERSON})
        portal.client.get(f"/enterprise/{CODE}/report.pdf")
    # The page's own lines (the test client's logger, httpx2, logs its own URLs).
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.portal")]
    assert "GET /enterprise/{code} 200" in " ".join(lines)
    assert "GET /enterprise/{code}/report.pdf 404" in " ".join(lines)
    for line in lines:
        assert CODE not in line and PERSON not in line and "testclient" not in line


def test_healthz_asks_nobody(portal: Portal) -> None:
    r = portal.client.get("/healthz")
    assert r.status_code == 200 and r.text == "ok"
    assert portal.source.asked == []


def test_the_style_sheet_is_served(portal: Portal) -> None:
    r = portal.client.get("/static/portal.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
