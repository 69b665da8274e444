"""Replay protection across restarts and processes (gateway.auth.replay, gateway.stores.replay)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth.replay import ReplayStore, ReplayStoreUnavailableError
from gateway.auth.tokens import TokenVerifier, TrustedIssuer, issue_token
from gateway.dev.pki import Pki, cert_thumbprint_pem
from gateway.errors import AuthenticationError, to_rpc_status
from gateway.runtime.config import load_config
from gateway.stores.replay import Claim, JtiStoreError
from gateway.stores.sqlite.replay import SQLiteJtiStore
from tests.helpers import Clock

AUD = "urn:credit-gateway:unit"
T0 = 1_900_000_000.0
ROOT = Path(__file__).resolve().parents[3]


def thumb(pki: Pki) -> str:
    return cert_thumbprint_pem(pki.agency_cert("ndrc").read_bytes())


def mint(pki: Pki, **kw: Any) -> str:
    kw.setdefault("issuer", pki.agency_token.issuer)
    kw.setdefault("audience", AUD)
    kw.setdefault("subject", "ndrc")
    kw.setdefault("cert_thumbprint", thumb(pki))
    kw.setdefault("now", T0)
    kid = pki.agency_token.signing_kid
    return issue_token(pki.agency_token.key(kid), kid, **kw)


def verifier(pki: Pki, store: ReplayStore | None, clock: Clock[float]) -> TokenVerifier:
    issuer = TrustedIssuer.from_jwks_file(pki.agency_token.issuer, pki.agency_token.jwks)
    return TokenVerifier([issuer], audience=AUD, clock=clock, replay_store=store)


def refusal(v: TokenVerifier, token: str, cert: str) -> str:
    with pytest.raises(AuthenticationError) as info:
        v.verify(token, cert)
    return info.value.reason


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


# --- the verifier with a store: restarts -----------------------------------------------


def test_a_restart_does_not_let_a_replayed_jti_through(auth_pki: Pki, tmp_path: Path) -> None:
    clock = Clock(T0)
    first = mint(auth_pki, jti="j1")
    copy = mint(auth_pki, jti="j1", now=T0 - 1)  # same jti, another string
    store = ReplayStore(tmp_path / "replay.sqlite")
    verifier(auth_pki, store, clock).verify(first, thumb(auth_pki))
    store.close()

    # "Restart": a new store connection and a new verifier with an empty cache.
    store = ReplayStore(tmp_path / "replay.sqlite")
    restarted = verifier(auth_pki, store, clock)
    assert refusal(restarted, copy, thumb(auth_pki)) == "TOKEN_REPLAYED"
    # The agency's own token, reused after the restart, is still good: reuse is not replay.
    assert restarted.verify(first, thumb(auth_pki)).jti == "j1"
    # Once the first token has expired (exp + leeway), its jti may be used again.
    clock.now = T0 + 3600 + 60
    late = mint(auth_pki, jti="j1", now=T0 + 3600)
    assert restarted.verify(late, thumb(auth_pki)).jti == "j1"
    store.close()


def test_without_a_store_a_restart_forgets(auth_pki: Pki) -> None:
    """The in-memory behaviour the store exists to fix (kept when none is configured)."""
    clock = Clock(T0)
    verifier(auth_pki, None, clock).verify(mint(auth_pki, jti="j2"), thumb(auth_pki))
    again = verifier(auth_pki, None, clock)
    again.verify(mint(auth_pki, jti="j2", now=T0 - 1), thumb(auth_pki))


def test_the_cached_path_does_not_write(auth_pki: Pki, tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "replay.sqlite")
    v = verifier(auth_pki, store, Clock(T0))
    token = mint(auth_pki, jti="j3")
    v.verify(token, thumb(auth_pki))
    store._store._conn.close()  # any write from here on would raise
    for _ in range(3):
        v.verify(token, thumb(auth_pki))


def test_a_refused_token_does_not_reach_the_store(auth_pki: Pki, tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "replay.sqlite")
    v = verifier(auth_pki, store, Clock(T0))
    bad = mint(auth_pki, jti="j4", audience="someone-else")
    assert refusal(v, bad, thumb(auth_pki)) == "TOKEN_WRONG_AUDIENCE"
    assert len(store) == 0
    store.close()


def test_a_store_that_cannot_be_written_fails_closed(auth_pki: Pki, tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "replay.sqlite")
    v = verifier(auth_pki, store, Clock(T0))
    store._store._conn.close()
    with pytest.raises(ReplayStoreUnavailableError) as info:
        v.verify(mint(auth_pki, jti="j5"), thumb(auth_pki))
    status = to_rpc_status(info.value)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert str(tmp_path) not in status.message  # the path is for the operator's log only
    assert v.cached_tokens == 0  # nothing accepted


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ReplayStoreUnavailableError, match="cannot open"):
        ReplayStore(tmp_path / "dir.sqlite")
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('format', 'credit-gateway ledger 9')")
    conn.commit()
    conn.close()
    with pytest.raises(ReplayStoreUnavailableError, match="format"):
        ReplayStore(other)


def test_open_shares_one_connection_per_file(tmp_path: Path) -> None:
    a = ReplayStore.open(tmp_path / "r.sqlite")
    assert ReplayStore.open(tmp_path / "r.sqlite") is a
    assert ReplayStore.open(tmp_path / "other.sqlite") is not a


def test_config(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text("{}")
    base = """
[gateway]
listen = "127.0.0.1:0"
insecure_dev_plaintext = true
[auth]
audience = "a"
{extra}
[[auth.issuers]]
issuer = "i"
jwks = "jwks.json"
[departments.tax]
address = "127.0.0.1:1"
"""
    path = tmp_path / "gateway.toml"
    path.write_text(base.format(extra='replay_store = "replay.sqlite"'))
    auth = load_config(path).auth
    assert auth is not None
    assert auth.replay_store == tmp_path / "replay.sqlite"
    assert auth.replay_store_max_entries == 1_000_000
    path.write_text(base.format(extra=""))
    auth = load_config(path).auth
    assert auth is not None and auth.replay_store is None
    for extra, key in [
        ('replay_store = "nowhere/replay.sqlite"', "auth.replay_store"),
        ("replay_store_max_entries = 0", "auth.replay_store_max_entries"),
        ("replay_store_max_entries = true", "auth.replay_store_max_entries"),
    ]:
        path.write_text(base.format(extra=extra))
        with pytest.raises(Exception, match=key):
            load_config(path)


# --- the table: expiry, purge, the bound -----------------------------------------------


# (expiry, reuse and the purge of the table itself: tests/contract/test_replay.py)


def test_full_refuses_new_tokens_and_never_evicts_a_live_jti(auth_pki: Pki, tmp_path: Path) -> None:
    store = ReplayStore(tmp_path / "r.sqlite", max_entries=2)
    clock = Clock(T0)
    v = verifier(auth_pki, store, clock)
    a, b = mint(auth_pki, jti="a", lifetime_s=600), mint(auth_pki, jti="b", lifetime_s=900)
    v.verify(a, thumb(auth_pki))
    v.verify(b, thumb(auth_pki))
    with pytest.raises(ReplayStoreUnavailableError) as info:
        v.verify(mint(auth_pki, jti="c"), thumb(auth_pki))
    assert info.value.reason == "REPLAY_STORE_FULL"
    assert info.value.retry_after_s == 600 + 60  # when the earliest row expires
    # A token already recorded still works in a fresh process (its row is there) ...
    again = verifier(auth_pki, store, clock)
    again.verify(a, thumb(auth_pki))
    # ... and a replay of one is still a replay, full or not.
    assert refusal(again, mint(auth_pki, jti="a", now=T0 - 1), thumb(auth_pki)) == "TOKEN_REPLAYED"
    clock.now = T0 + 660  # "a" expired: its row is purged, room for one
    v.verify(mint(auth_pki, jti="c", now=T0 + 600), thumb(auth_pki))
    assert len(store) == 2


# --- two processes ---------------------------------------------------------------------

_RACER = textwrap.dedent(
    """
    import hashlib, sys
    from gateway.stores.sqlite.replay import SQLiteJtiStore
    path, me, go = sys.argv[1], sys.argv[2], sys.argv[3]
    store = SQLiteJtiStore(path)
    import os, time
    while not os.path.exists(go):
        time.sleep(0.001)
    won = [store.claim("iss", f"jti{k}", hashlib.sha256(me.encode()).digest(),
                       expires_at=4e9, now=1e9).name for k in range(40)]
    print(" ".join(won))
    """
)


def test_two_processes_racing_on_each_jti_one_wins(tmp_path: Path) -> None:
    path, go = tmp_path / "r.sqlite", tmp_path / "go"
    SQLiteJtiStore(path).close()  # the file exists before the race
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), name, str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name in ("gateway-a", "gateway-b")
    ]
    go.touch()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for k in range(40):
        assert sorted(o[k] for o in outs) == ["ACCEPTED", "REPLAYED"]
    # Each process's own token string, presented again, is reuse in either process's view.
    store = SQLiteJtiStore(path)
    for k in range(40):
        winner = "gateway-a" if outs[0][k] == "ACCEPTED" else "gateway-b"
        assert store.claim("iss", f"jti{k}", sha(winner), expires_at=4e9, now=1e9) is Claim.ACCEPTED
    store.close()


# --- property: the store against a model -----------------------------------------------


_step = st.tuples(
    st.sampled_from(["j1", "j2", "j3"]),  # jti
    st.sampled_from(["s1", "s2", "s3"]),  # token string
    st.integers(0, 30),  # lifetime
    st.integers(0, 20),  # seconds that pass before the step
    st.booleans(),  # restart (a new connection) before the step
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(_step, max_size=25))
def test_claims_match_a_model(tmp_path_factory: pytest.TempPathFactory, steps: list[Any]) -> None:
    path = tmp_path_factory.mktemp("prop") / "r.sqlite"
    store = SQLiteJtiStore(path, max_entries=1000)
    model: dict[str, tuple[str, float]] = {}  # jti -> (string, expires_at)
    now = 0.0
    for jti, string, lifetime, wait, restart in steps:
        now += wait
        if restart:
            store.close()
            store = SQLiteJtiStore(path, max_entries=1000)
        held = model.get(jti)
        if held is not None and held[0] != string and held[1] > now:
            expected = Claim.REPLAYED
        else:
            expected = Claim.ACCEPTED
            keep = held[1] if held is not None and held[0] == string else 0.0
            model[jti] = (string, max(keep, now + lifetime))
        assert store.claim("iss", jti, sha(string), expires_at=now + lifetime, now=now) is expected
    store.close()


def test_the_sqlite_store_raises_only_the_interface_error(tmp_path: Path) -> None:
    """Like the PostgreSQL store, the SQLite one raises JtiStoreError, never sqlite3.Error,
    and its messages name the operation and SQLite's error, never an issuer or jti."""
    path = tmp_path / "replay.sqlite"
    store = SQLiteJtiStore(path)
    assert store.claim("iss-x", "jti-x", sha("t"), expires_at=T0 + 100, now=T0) is Claim.ACCEPTED
    other = sqlite3.connect(path)
    other.execute("DROP TABLE seen_jti")  # a damaged file, from outside
    other.commit()
    other.close()
    calls = {
        "claim": lambda: store.claim("iss-x", "jti-y", sha("u"), expires_at=T0 + 9, now=T0),
        "purge": lambda: store.purge(T0),
        "read": store.next_expiry,
    }
    for op, call in calls.items():
        with pytest.raises(JtiStoreError) as info:
            call()
        assert not isinstance(info.value, sqlite3.Error)
        assert str(info.value) == f"{op}: SQLITE_ERROR (no such table: seen_jti)"
    store.close()
    # Opening a file that is not a database at all: the interface's error too.
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database, " * 512)
    with pytest.raises(JtiStoreError) as info:
        SQLiteJtiStore(junk)
    assert str(info.value) == "open: SQLITE_NOTADB (file is not a database)"
