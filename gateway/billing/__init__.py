"""Billing: free quotas, the self-query allowance and paid queries (Art. 17, Art. 31).

* :mod:`gateway.billing.prices`: the price list, quotas and allowance (``policies/prices.toml``);
* :mod:`gateway.billing.ledger`: accounts and append-only entries (:class:`LedgerStore`,
  :class:`AsyncLedger`; the backends are in :mod:`gateway.stores`);
* :mod:`gateway.billing.meter`: the pipeline's steps 4 and 7 (:class:`Meter`), start-up
  recovery of bookings not on the audit record;
* :mod:`gateway.billing.charges`: what a query reserves and is charged (:class:`Reservation`,
  :class:`Settlement`);
* :mod:`gateway.api.billing`: the ``BillingAdmin`` gRPC service (finance role);
* :mod:`gateway.cli.billing`: ``credit-gateway billing``, offline administration.

Money is integer fen everywhere; no float ever touches it.
"""

from gateway.billing.charges import (
    DELIVERED_STATUSES,
    ChargeLine,
    Mode,
    Reservation,
    Settlement,
    delivered_lines,
    granted_lines,
    mode_name,
    query_billing,
)
from gateway.billing.ledger import (
    AccountState,
    AsyncLedger,
    Entry,
    LedgerStore,
)
from gateway.billing.meter import EventHook, Meter
from gateway.billing.prices import PriceList, default_prices_path, load_prices, parse_prices

__all__ = [
    "DELIVERED_STATUSES",
    "AccountState",
    "AsyncLedger",
    "ChargeLine",
    "Entry",
    "EventHook",
    "LedgerStore",
    "Meter",
    "Mode",
    "PriceList",
    "Reservation",
    "Settlement",
    "default_prices_path",
    "delivered_lines",
    "granted_lines",
    "load_prices",
    "mode_name",
    "parse_prices",
    "query_billing",
]
