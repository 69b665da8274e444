"""credit-gateway: a federated credit-query gateway.

One folder per question a newcomer asks:

* ``domain/``: identifiers (GB 32100 / GB 11643), the catalog, purposes, names;
* ``pipeline/``: the query path, one module per step in run order;
* ``api/``: the gRPC edge (the interceptor, reflection); where errors meet gRPC;
* ``auth/``, ``policy/``, ``billing/``, ``federation/``, ``audit/``, ``policyadmin/``: the
  concerns each step calls;
* ``runtime/``: configuration, assembly, the server, metrics and logs;
* ``cli/``: the commands; ``dev/``: development tooling, never imported by production code;
* ``errors``: the one hierarchy and its gRPC mapping.

``gateway.identifiers``, ``gateway.catalog``, ``gateway.console`` and ``gateway.pki`` are the
old import paths, kept so that departments' code keeps working.
"""

__version__ = "0.1.0"
