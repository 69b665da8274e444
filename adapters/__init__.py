"""The department side of credit-gateway.

Credit data stays with the department that owns it. Each department runs its
own adapter process serving the ``credit.v1.DepartmentAdapter`` gRPC API over
its own store; the gateway asks it only for the fields a policy allows.

* :mod:`adapters.sdk`: serve the adapter API over any :class:`~adapters.sdk.Store`
  (validation, data minimisation, health checking, mutual TLS with a client
  allow-list).
* :mod:`adapters.sql`: a generic, read-only SQL store driven by a TOML mapping
  file, so a department plugs in an existing database without writing Python.
* :mod:`adapters.synth`: a deterministic synthetic data generator for the
  sample departments in ``adapters/samples/``.
* :mod:`adapters.testing`: in-memory fakes, with knobs for misbehaviour.
* :mod:`adapters.cli`: the ``credit-adapter`` command.
"""
