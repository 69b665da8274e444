"""Storage backends, side by side: :mod:`gateway.stores.sqlite` (embedded files, the
default: ``make demo`` needs nothing installed) and :mod:`gateway.stores.postgres` (one
database shared by every gateway process on every host, configured by ``[storage]``).

Each backend has one module per store (``ledger``, ``replay``, ``limits``, ...). The
interfaces stay with the concept that owns their rules: :class:`LedgerStore` in
:mod:`gateway.billing.ledger` (whose transactions are written once, over portable SQL,
for both backends), :class:`SharedBudget` in :mod:`gateway.pipeline.limits`; the ``jti``
store's, a storage seam only, is :mod:`gateway.stores.replay`. Backends import their
concept, never the other way round. tests/contract/ runs one set of tests per interface
against both backends.

:mod:`gateway.stores.sqlite` and :mod:`gateway.stores.replay` are standard library
only: the auditors' ``credit-audit`` tool imports the SQLite set-up.
"""
