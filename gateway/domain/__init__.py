"""The vocabulary every step shares, with no gRPC server in it.

* :mod:`gateway.domain.identifiers`: USCC (GB 32100-2015) and resident id (GB 11643-1999)
  check characters; standard library only, so the auditors' tool uses the same rules;
* :mod:`gateway.domain.catalog`: what each department publishes (datasets, fields, tiers);
* :mod:`gateway.domain.purposes`: the purposes an agency may state and their legal basis;
* :mod:`gateway.domain.names`: the wire enums' stable names used in records and metrics.

This package imports nothing itself, so importing one module pulls in only that module.
"""
