"""Three OS processes on one PostgreSQL ledger, reserving and settling the same and
different request ids at once: each id is held and charged once, no balance is spent
twice, the ledger checks clean."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.stores.postgres.connect import PgTarget, open_pool
from gateway.stores.postgres.ledger import PostgresLedger

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from datetime import UTC, datetime
    from gateway.billing.ledger import PricedLine, ReserveSpec
    from gateway.errors import InsufficientBalanceError
    from gateway.stores.postgres.connect import PgTarget, open_pool
    from gateway.stores.postgres.ledger import PostgresLedger

    url, me, go = sys.argv[1], sys.argv[2], sys.argv[3]
    ledger = PostgresLedger(open_pool(PgTarget(url), max_size=2))
    now = datetime.now(UTC)

    def spec(rid, account, fen):
        lines = (PricedLine("dept", "a", fen), PricedLine("dept", "b", fen))
        return ReserveSpec(rid, account, "paid", lines, "digest", now)

    while not os.path.exists(go):
        time.sleep(0.001)
    fresh = 0
    for i in range(60):
        rid = f"same-{i}"
        fresh += not ledger.reserve(spec(rid, "bank", 50)).replay
        ledger.settle(rid, frozenset({("dept", "a")}), now)
        try:
            ledger.reserve(spec(f"{me}-{i}", "tight", 10))
        except InsufficientBalanceError:
            pass
    ledger.close()
    print(fresh)
    """
)


@pytest.mark.slow
def test_three_processes_charge_each_request_id_once(pg_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ledger = PostgresLedger(open_pool(PgTarget(pg_url), max_size=2))
    try:
        ledger.top_up("bank", 1_000_000, "TX-1", now, create=True)
        ledger.top_up("tight", 1_000, "TX-2", now, create=True)
        go = tmp_path / "go"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, pg_url, f"p{k}", str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(3)
        ]
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
        # Every shared id was reserved afresh by exactly one of the three.
        assert sum(int(o.strip()) for o, _ in outs) == 60
        for i in range(60):
            kinds = sorted(e.kind for e in ledger.entries(request_id=f"same-{i}"))
            assert kinds == ["charge", "release", "reserve", "reserve"]
        bank = ledger.account("bank")
        tight = ledger.account("tight")
        assert bank is not None and bank.balance_fen == 1_000_000 - 60 * 50
        assert bank.held_fen == 0
        # 20 fen a reservation: 50 of them fit in 1,000 fen, and not one more.
        assert tight is not None and tight.held_fen == 1_000 and tight.available_fen == 0
        assert ledger.check() == []
    finally:
        ledger.close()
