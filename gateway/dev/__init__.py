"""Development tooling: never imported by production code (a test checks it).

* :mod:`gateway.dev.pki`: a development CA, certificates and token issuer keys;
* :mod:`gateway.dev.devstack`: a whole federation (departments and gateway) on one machine;
* :mod:`gateway.dev.demo`: ``credit-gateway demo``.

This package imports nothing itself.
"""
