"""gateway.audit.reportcheck: a signed report checks, as a PDF and as JSON, and every change
to it is refused: one changed byte anywhere in the PDF, another key, a receipt that is not in
the log, a second embedded report."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.cli import main as credit_audit
from gateway.audit.errors import NoteError
from gateway.audit.merkle import leaf_hash
from gateway.audit.note import open_note, sign_note
from gateway.audit.reportcheck import (
    MARKER,
    ReportError,
    check_report,
    code_of,
    content_message,
    envelope_bytes,
    extract_envelope,
)
from gateway.report.maker import MadeReport, ReportMaker
from tests.unit.report.report_kit import INDEX, ORIGIN, SIZE, Kit, font, kit, response

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def made() -> tuple[Kit, MadeReport]:
    k = kit()
    return k, k.make()


def test_a_report_checks_as_pdf_and_as_json(made: tuple[Kit, MadeReport]) -> None:
    k, report = made
    as_pdf = check_report(report.pdf, k.verifiers)
    as_json = check_report(report.json, k.verifiers)
    assert as_pdf.pdf and not as_json.pdf
    assert as_pdf.content == as_json.content
    assert as_pdf.verification_code == report.code == code_of(as_pdf.content)
    assert (as_pdf.checkpoint.origin, as_pdf.checkpoint.size) == (ORIGIN, SIZE)
    receipt = as_pdf.content["receipt"]
    assert receipt["log_index"] == INDEX
    assert receipt["response_digest"] == bytes(range(32)).hex()


def test_the_embedded_json_is_the_json_form_plus_the_file_signature(
    made: tuple[Kit, MadeReport],
) -> None:
    _, report = made
    embedded, _, _ = extract_envelope(report.pdf)
    alone = json.loads(report.json)
    assert set(embedded) - set(alone) == {"pdf_signature"}
    assert {k: v for k, v in embedded.items() if k != "pdf_signature"} == alone
    assert report.pdf.count(MARKER) == 1


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_one_changed_byte_anywhere_in_the_pdf_is_refused(
    made: tuple[Kit, MadeReport], data: st.DataObject
) -> None:
    k, report = made
    # Half the draws aim at the embedded envelope (signatures, receipt, proof), half anywhere.
    start, _, end = (lambda e: (e[1], None, e[2]))(extract_envelope(report.pdf))
    where = data.draw(
        st.one_of(st.integers(0, len(report.pdf) - 1), st.integers(start, end - 1)), label="at"
    )
    flip = data.draw(st.integers(1, 255), label="xor")
    copy = bytearray(report.pdf)
    copy[where] ^= flip
    with pytest.raises(ReportError):
        check_report(bytes(copy), k.verifiers)


def test_every_byte_of_the_signature_slot_matters(made: tuple[Kit, MadeReport]) -> None:
    # Base64's unused low bits would let a changed last character decode to the same bytes.
    k, report = made
    envelope, _, end = extract_envelope(report.pdf)
    slot = envelope["pdf_signature"].encode()
    at = report.pdf.rindex(slot, 0, end)
    for i in range(len(slot)):
        for ch in b"AQgw+/=":
            if slot[i] == ch:
                continue
            copy = report.pdf[: at + i] + bytes([ch]) + report.pdf[at + i + 1 :]
            with pytest.raises(ReportError):
                check_report(copy, k.verifiers)


def _json_with(report: MadeReport, **changes: object) -> bytes:
    envelope = json.loads(report.json)
    envelope.update(changes)
    return envelope_bytes(envelope)


def test_changed_content_is_refused(made: tuple[Kit, MadeReport]) -> None:
    k, report = made
    content = json.loads(report.json)["content"]
    content["charge"]["amount_fen"] = 0
    with pytest.raises(ReportError, match="does not match its signature"):
        check_report(_json_with(report, content=content), k.verifiers)


def test_another_key_is_not_trusted(made: tuple[Kit, MadeReport]) -> None:
    _, report = made
    with pytest.raises(ReportError, match="not a trusted key"):
        check_report(report.pdf, kit().verifiers)


def test_a_receipt_that_is_not_in_the_log_is_refused() -> None:
    font()
    k = kit()
    # Signed by the log's own key, but the leaf is not the one at INDEX.
    forged = ReportMaker(k.signer, font()).make(
        k.content(response(leaf=leaf_hash(b"never appended"))), k.proof()
    )
    for form in (forged.pdf, forged.json):
        with pytest.raises(ReportError, match=f"entry {INDEX}.* is not in the log"):
            check_report(form, k.verifiers)


def test_a_proof_for_another_entry_or_log_is_refused(made: tuple[Kit, MadeReport]) -> None:
    k, report = made
    with pytest.raises(ReportError, match="the proof is for entry 2"):
        check_report(_json_with(report, proof=k.proof(2)), k.verifiers)
    other = kit("other.example/log")
    with pytest.raises(ReportError, match="not acceptable"):
        check_report(_json_with(report, proof=other.proof()), k.verifiers)
    with pytest.raises(ReportError, match="no inclusion proof"):
        check_report(_json_with(report, proof=None), k.verifiers)


def test_the_verification_code_belongs_to_the_content(made: tuple[Kit, MadeReport]) -> None:
    k, report = made
    with pytest.raises(ReportError, match="verification code"):
        check_report(_json_with(report, verification_code="AAAA-AAAA-AAAA-AAAA"), k.verifiers)


def test_no_report_or_two_reports_are_refused(made: tuple[Kit, MadeReport]) -> None:
    k, report = made
    with pytest.raises(ReportError, match="no credit-gateway report"):
        check_report(b"%PDF-1.4\n%%EOF\n", k.verifiers)
    with pytest.raises(ReportError, match="more than one"):
        check_report(report.pdf + b"\n" + report.json, k.verifiers)
    with pytest.raises(ReportError, match="before or after"):
        check_report(b"x" + report.json, k.verifiers)


def test_a_report_signature_can_never_be_a_checkpoint_signature(
    made: tuple[Kit, MadeReport],
) -> None:
    # Domain separation: the signed message holds a NUL, which no note text may hold.
    k, report = made
    message = content_message(json.loads(report.json)["content"])
    assert b"\x00" in message
    with pytest.raises(NoteError, match="control character"):
        sign_note(message.decode() + "\n", [k.signer])
    signature = base64.b64decode(json.loads(report.json)["signature"]["content"])
    line = (
        f"\u2014 {ORIGIN} "
        + base64.b64encode(k.signer.key_id.to_bytes(4, "big") + signature).decode()
    )
    with pytest.raises(NoteError):
        open_note(message.decode("utf-8", "replace") + "\n\n" + line + "\n", k.verifiers)


def test_check_report_command(
    made: tuple[Kit, MadeReport], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k, report = made
    key = tmp_path / "log.vkey"
    key.write_text(k.verifiers[0].key_string() + "\n")
    (tmp_path / "r.pdf").write_bytes(report.pdf)
    (tmp_path / "r.json").write_bytes(report.json)
    assert credit_audit(["check-report", str(tmp_path / "r.pdf"), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: report {report.code}") and "PDF file and content" in out
    assert credit_audit(["check-report", str(tmp_path / "r.json"), "--key", str(key)]) == 0
    bad = bytearray(report.pdf)
    bad[len(bad) // 2] ^= 0x20
    (tmp_path / "bad.pdf").write_bytes(bytes(bad))
    assert credit_audit(["check-report", str(tmp_path / "bad.pdf"), "--key", str(key)]) == 1
    assert capsys.readouterr().err.startswith("FAILED: ")
    assert credit_audit(["check-report", str(tmp_path / "missing.pdf"), "--key", str(key)]) == 2


_BLOCKED = textwrap.dedent(
    """
    import sys

    BLOCKED = ("grpc", "google", "protobuf", "reportlab", "segno", "PIL", "casbin", "jwt")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"the auditors' tool must not import {name}")
            return None

    sys.meta_path.insert(0, Block())
    from gateway.audit.cli import main
    code = main(sys.argv[1:])
    assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    sys.exit(code)
    """
)


def test_check_report_needs_no_pdf_library(made: tuple[Kit, MadeReport], tmp_path: Path) -> None:
    k, report = made
    key = tmp_path / "log.vkey"
    key.write_text(k.verifiers[0].key_string() + "\n")
    (tmp_path / "r.pdf").write_bytes(report.pdf)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCKED,
            "check-report",
            str(tmp_path / "r.pdf"),
            "--key",
            str(key),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: report ")


@settings(max_examples=25, deadline=None)
@given(
    text=st.one_of(
        st.text(min_size=1, max_size=60),
        st.sampled_from(
            [
                MARKER.decode(),
                '{"format":"credit-gateway-report/1","content":{}}',
                '"pdf_signature":"' + "-" * 88 + '"}',
                "stream\nendstream\nendobj %%EOF",
                "\x00\x01\u2028\ud7ff\U0001f600",
            ]
        ),
    )
)
def test_department_text_of_any_kind_never_confuses_the_check(text: str) -> None:
    # Record text and section details are the departments' (and, through a statement, a
    # subject's): whatever they hold, the report still checks, as PDF and as JSON.
    font()
    k = kit()
    r = response()
    record = r.sections[0].datasets[0].records[0]
    record.fields["decision_number"].text = text
    r.sections[1].detail = text
    made = ReportMaker(k.signer, font()).make(k.content(r), k.proof())
    for form in (made.pdf, made.json):
        checked = check_report(form, k.verifiers)
        fields = checked.content["sections"][0]["datasets"][0]["records"][0]["fields"]
        assert fields[0]["value"] == text
