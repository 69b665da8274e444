"""Reports made in memory for the unit tests: a real key, a real Merkle tree and checkpoint,
a QueryResponse with every kind of section. ``font()`` skips, saying NOT RUN, where no CJK
TrueType font is installed (``.ci/run`` installs Debian's fonts-wqy-zenhei)."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.checkpoint import Checkpoint, TlogProof, sign_checkpoint
from gateway.audit.merkle import MerkleTree, leaf_hash
from gateway.audit.note import Ed25519Signer, Verifier, generate_key
from gateway.domain.catalog import load_catalog
from gateway.errors import ConfigError
from gateway.report import ReportFacts, ReportMaker, build_content, find_font
from gateway.report.maker import MadeReport
from protos.credit.v1 import query_pb2

ORIGIN = "reports.example/log"
INDEX = 3
SIZE = 7
USCC = "91110000802100433B"


def font() -> Path:
    """The CJK font, or skip the test saying why it did not run."""
    try:
        return find_font()
    except ConfigError as err:
        pytest.skip(f"NOT RUN: {err.problem}")


def need(tool: str) -> str:
    """The path of a poppler tool, or skip the test saying why it did not run."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(
            f"NOT RUN: {tool} is not installed (Debian's poppler-utils; .ci/run installs it)"
        )
    return path


def response(*, leaf: bytes | None = None) -> query_pb2.QueryResponse:
    """An answer with an OK section (a disputed negative record, aged-out ones, a withheld
    field) and a timed-out one; its receipt names entry INDEX of ``leaves()``."""
    r = query_pb2.QueryResponse(
        request_id="123e4567-e89b-12d3-a456-426614174000",
        query_date="2026-11-30",
        policy_version="7",
        catalog_version="2026.11.1",
    )
    market = r.sections.add(department="market", status=query_pb2.SECTION_STATUS_OK)
    penalties = market.datasets.add(dataset="administrative_penalties", aged_out=2)
    rec = penalties.records.add(record_id="P-1", disputed=True, event_end_date="2024-01-02")
    rec.fields["decision_number"].text = "京市监罚〔2024〕12号"
    rec.fields["fine_fen"].money_fen = 1234567
    rec.fields["decided_on"].date = "2024-01-01"
    market.withheld.add(
        dataset="registration",
        field="address",
        reason=query_pb2.WITHHOLD_REASON_CONSENT_REQUIRED,
        detail="no consent token",
    )
    r.sections.add(department="tax", status=query_pb2.SECTION_STATUS_TIMED_OUT, detail="deadline")
    r.charge.amount_fen = 500
    r.receipt.origin = ORIGIN
    r.receipt.log_index = INDEX
    r.receipt.leaf_hash = leaf if leaf is not None else leaf_hash(b"leaf %d" % INDEX)
    r.receipt.response_digest = bytes(range(32))
    return r


def facts() -> ReportFacts:
    return ReportFacts(
        agency_id="bank-001",
        agency_name="示例商业银行",
        purpose="lending",
        purpose_title="贷款审批",
        subject_type="enterprise",
        subject_id=USCC,
    )


@dataclass
class Kit:
    """A log key, a tree of SIZE leaves and its signed checkpoint."""

    signer: Ed25519Signer
    verifiers: list[Verifier]
    tree: MerkleTree
    note: str

    def proof(self, index: int = INDEX) -> str:
        return TlogProof(index, tuple(self.tree.inclusion_proof(index, SIZE)), self.note).text()

    def content(self, r: query_pb2.QueryResponse | None = None) -> dict[str, Any]:
        return build_content(
            r or response(),
            facts(),
            load_catalog(),
            generated_at=dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC),
        )

    def make(self, r: query_pb2.QueryResponse | None = None) -> MadeReport:
        return ReportMaker(self.signer, font()).make(self.content(r), self.proof())


def kit(origin: str = ORIGIN) -> Kit:
    skey, vkey = generate_key(origin)
    signer = Ed25519Signer.from_key_string(skey)
    tree = MerkleTree()
    for i in range(SIZE):
        tree.append(leaf_hash(b"leaf %d" % i))
    note = sign_checkpoint(Checkpoint(origin, SIZE, tree.root()), [signer])
    return Kit(signer, [Verifier.from_key_string(vkey)], tree, note)
