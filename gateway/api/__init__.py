"""The gRPC edge: where errors and identities meet gRPC.

* :mod:`gateway.api.edge`: the one server interceptor (:class:`Edge`): the catch-all that
  turns any exception into a clean status with no path, and the refusal record;
  :func:`authenticate` and :func:`identified` for the servicers;
* :mod:`gateway.api.reflection`: server reflection limited to the published services;
* :mod:`gateway.api.query`: ``QueryService``, the query pipeline's entry point.

The servicers: ``QueryService`` (:mod:`gateway.api.query`), ``AuditService``
(:mod:`gateway.audit.auditor`), ``BillingAdminService`` (:mod:`gateway.billing.admin`) and
``PolicyAdminService`` (:mod:`gateway.policyadmin.service`); :mod:`gateway.runtime.server`
registers all four behind :class:`Edge`. This package imports nothing itself.
"""
