"""A second implementation, in JavaScript, recomputes the
receipt's response_digest from the answer it parsed (tests/node/digest_check.js,
@grpc/grpc-js and protobufjs over real mutual TLS) and must match.

Where Node or its packages cannot be had, the test is SKIPPED saying why: it
never passes without having run."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from gateway.dev.devstack import DevStack
from gateway.stores.sqlite.audit import SQLiteStore
from tests.integration.conftest import subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"


def _node_or_skip() -> str:
    """The node executable, with tests/node's packages installed (npm ci), or skip."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("NOT RUN: the JavaScript digest check needs node (>= 18) on PATH")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("NOT RUN: tests/node needs `npm ci`, and npm is not on PATH")
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("NOT RUN: `npm ci` in tests/node took over 240 s (no registry?)")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"NOT RUN: `npm ci` in tests/node failed ({last})")
    return node


async def test_javascript_recomputes_the_receipt_digest(stack: DevStack, tmp_path: Path) -> None:
    node = _node_or_skip()
    config = {
        "repo": str(REPO),
        "address": stack.gateway.address,
        "ca": str(stack.pki.ca_cert),
        "cert": str(stack.pki.agency_cert("procurement")),
        "key": str(stack.pki.agency_key("procurement")),
        "token": stack.tokens["procurement"].read_text(encoding="utf-8").strip(),
        "request_id": str(uuid.uuid4()),
        "subject_type": 1,  # SUBJECT_TYPE_ENTERPRISE
        "subject_id": subject(stack, "enterprise_all_departments"),
        "purpose": "government_procurement",
    }
    path = tmp_path / "node-config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "digest_check.js"), str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    # The answer has maps with several entries: where serialisers disagree.
    assert result["map_entries"] >= 10
    assert result["canonical_digest"] == result["receipt_digest"], result
    # ...and the same digest is in the signed audit record of that query.
    store = SQLiteStore(stack.audit["log"], read_only=True)
    try:
        entry = store.entry(int(result["log_index"]))
    finally:
        store.close()
    assert entry is not None
    assert json.loads(entry.leaf)["response_sha256"] == result["receipt_digest"]
