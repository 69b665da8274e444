"""credit-gateway: a federated credit-query gateway.

The package is organised by concern: ``identifiers`` (GB 32100 / GB 11643),
``catalog`` (what departments publish), ``federation`` (asking departments),
``errors`` (the one hierarchy and its gRPC mapping), ``server`` (the grpc.aio
server that runs the query pipeline) and ``cli`` (the ``credit-gateway`` command).
"""

__version__ = "0.1.0"
