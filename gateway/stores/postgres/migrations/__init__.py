"""Schema migrations of the PostgreSQL stores, ``NNNN_name.sql``, applied in order."""
