"""What runs the process: configuration, wiring, the grpc.aio server, metrics and logs.

* :mod:`gateway.runtime.config`: the TOML configuration file -> :class:`Config`;
* :mod:`gateway.runtime.assembly`: builds the audit log, authenticator, ledger and policy
  from a :class:`Config`;
* :mod:`gateway.runtime.server`: :class:`Gateway`, the server with every service and health;
* :mod:`gateway.runtime.metrics`, :mod:`gateway.runtime.logs`: Prometheus and JSON logs;
* :mod:`gateway.runtime.secretfile`: writing files only their owner may read (mode 0600).

This package imports nothing itself.
"""
