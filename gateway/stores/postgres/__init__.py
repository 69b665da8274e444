"""PostgreSQL, the shared backend for a regional deployment: many gateway processes on
many hosts over one database (ARCHITECTURE.md, "Scale-out on PostgreSQL").

The driver is psycopg 3 with psycopg_pool: it is typed (the stores stay under mypy
strict), documents its behaviour behind PgBouncer, has LISTEN/NOTIFY on a dedicated
connection (``Connection.notifies``), pipeline mode for batched statements and a pool
whose ``getconn`` always takes a timeout. asyncpg is faster per call but untyped and its
pool waits forever unless told otherwise.

:mod:`.connect` turns the ``[storage]`` configuration into connections and pools;
:mod:`.migrate` applies the versioned schema (``credit-gateway db migrate``) and lets a
serving process refuse a schema it does not know, rather than altering it behind the
operator's back. Each store's tables are in ``migrations/NNNN_name.sql``.
"""
