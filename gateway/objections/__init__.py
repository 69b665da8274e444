"""Objections (Decree 631 Art. 25) and credit repair of public credit information.

* :mod:`~gateway.objections.store`: the objection store's interface and its SQLite backend
  (PostgreSQL: :mod:`gateway.stores.postgres.objections`);
* :mod:`~gateway.objections.repair`: the minimum publication periods (``policies/repair.toml``);
* :mod:`~gateway.objections.desk`: filing, the 20-day clock, routing, polling, the marks
  every query shows, and :meth:`ObjectionDesk.is_repaired` for screening.

The gRPC face is :mod:`gateway.api.objections` (``credit.v1.ObjectionService``).
"""

from gateway.objections.desk import (
    ANSWER_DAYS,
    BEIJING,
    Filing,
    ManualClock,
    ObjectionDesk,
    ObjectionExistsError,
    RepairTooEarlyError,
    utc_now,
)
from gateway.objections.repair import RepairPolicy, load_repair_policy
from gateway.objections.store import (
    Marks,
    ObjectionRow,
    ObjectionStore,
    ObjectionStoreError,
    SQLiteObjectionStore,
)

__all__ = [
    "ANSWER_DAYS",
    "BEIJING",
    "Filing",
    "ManualClock",
    "Marks",
    "ObjectionDesk",
    "ObjectionExistsError",
    "ObjectionRow",
    "ObjectionStore",
    "ObjectionStoreError",
    "RepairPolicy",
    "RepairTooEarlyError",
    "SQLiteObjectionStore",
    "load_repair_policy",
    "utc_now",
]
