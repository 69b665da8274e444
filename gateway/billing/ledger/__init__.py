"""The ledger: accounts, append-only money entries, and the metered requests.

A package of three parts; every public name is re-exported here, so
``from gateway.billing.ledger import SQLiteLedger`` keeps working:

* the types and the store interface (:class:`LedgerStore`, :class:`Entry`,
  :class:`RequestRecord`, :class:`ReserveSpec` and the results);
* :class:`SQLiteLedger`, the embedded store (one SQLite file);
* :class:`AsyncLedger`, the group-commit worker that drives a store from asyncio.

Money is integer fen everywhere.
"""

from gateway.billing.ledger._sqlite import SQLiteLedger
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
    "ReleaseResult",
    "RequestRecord",
    "RequestState",
    "ReserveResult",
    "ReserveSpec",
    "SQLiteLedger",
    "SettleResult",
    "StatementPage",
    "TopUpResult",
    "UnauditedKind",
    "entry_effect",
]
