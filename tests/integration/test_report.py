"""Signed credit reports end to end: the Report RPC over the real federation, the PDF read
back by poppler, and credit-audit check-report offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.audit.note import load_verifiers
from gateway.audit.reportcheck import check_report
from gateway.cli.connect import build_request
from gateway.dev.devstack import DevStack
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_report_is_signed_and_checks(stack: DevStack, tmp_path: Path) -> None:
    request = build_request(
        enterprise=subject(stack, "enterprise_all_departments"), purpose="supervision_inspection"
    )
    async with stack.client("ndrc") as client:
        made = await client.report(request)
    assert made.pdf.startswith(b"%PDF-")
    assert made.response.receipt.leaf_hash
    verifiers = load_verifiers(stack.audit["verifier_key"])
    checked = check_report(made.pdf, verifiers)
    assert checked.verification_code == made.verification_code
    assert check_report(made.json, verifiers).content == checked.content
    (tmp_path / "r.pdf").write_bytes(made.pdf)
    print(tmp_path)
