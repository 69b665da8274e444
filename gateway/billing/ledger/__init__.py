"""The ledger: accounts, append-only money entries, and the metered requests.

The concept and its rules live here; the storage backends live with the other
stores (:mod:`gateway.stores.sqlite.ledger`, the embedded file;
:mod:`gateway.stores.postgres.ledger`, shared by many processes), so this package
never imports a backend:

* the types and the store interface (:class:`LedgerStore`, :class:`Entry`,
  :class:`RequestRecord`, :class:`ReserveSpec` and the results);
* :class:`SqlLedger`, every operation written once over portable SQL, which both
  backends subclass (the rules cannot drift apart between them);
* :class:`AsyncLedger`, the worker that drives a store from asyncio (group commit
  on SQLite, a few concurrent transactions on PostgreSQL).

Money is integer fen everywhere.
"""

from gateway.billing.ledger._engine import SqlLedger
from gateway.billing.ledger._types import (
    MAX_AMOUNT_FEN,
    AccountState,
    Balances,
    Basis,
    Discrepancy,
    Entry,
    EntryKind,
    LedgerStore,
    PricedLine,
    RecordedSettlement,
    ReleaseResult,
    RequestRecord,
    RequestState,
    ReserveResult,
    ReserveSpec,
    SettleResult,
    StatementPage,
    TopUpResult,
    UnauditedKind,
    entry_effect,
)
from gateway.billing.ledger._worker import AsyncLedger

__all__ = [
    "MAX_AMOUNT_FEN",
    "AccountState",
    "AsyncLedger",
    "Balances",
    "Basis",
    "Discrepancy",
    "Entry",
    "EntryKind",
    "LedgerStore",
    "PricedLine",
    "RecordedSettlement",
    "ReleaseResult",
    "RequestRecord",
    "RequestState",
    "ReserveResult",
    "ReserveSpec",
    "SettleResult",
    "SqlLedger",
    "StatementPage",
    "TopUpResult",
    "UnauditedKind",
    "entry_effect",
]
