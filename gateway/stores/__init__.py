"""Storage set-up shared by the gateway's stores.

:mod:`gateway.stores.sqlite` opens an SQLite file durably (the one place the
connection settings live); the ledger, the audit log and the policy version
store all open their files through it. Other backends (PostgreSQL) sit beside
it here. Everything in this package is standard library only: the auditors'
``credit-audit`` tool imports it.
"""
