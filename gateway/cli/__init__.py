"""The commands, one module each, and the one way they connect to a gateway.

* :mod:`gateway.cli.gateway`: ``credit-gateway`` (serve, demo, certs, token, consent,
  billing, policy);
* :mod:`gateway.cli.query`: ``credit-query``, an agency's client;
* :mod:`gateway.cli.billing`, :mod:`gateway.cli.policy`, :mod:`gateway.cli.consent`: the
  billing, policy and consent subcommands;
* :mod:`gateway.cli.connect`: a channel from ``demo.json`` or from flags;
* :mod:`gateway.cli.console`: exit codes and output shared by every command (standard
  library only: ``credit-audit`` uses it).

``credit-audit`` lives in :mod:`gateway.audit.cli`, which must import only the standard
library and ``cryptography``. This package imports nothing itself.
"""
