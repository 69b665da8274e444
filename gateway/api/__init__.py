"""The gRPC edge: where errors and identities meet gRPC.

* :mod:`gateway.api.edge`: the one server interceptor (:class:`Edge`): the catch-all that
  turns any exception into a clean status with no path, and the refusal record;
  :func:`authenticate` and :func:`identified` for the servicers;
* :mod:`gateway.api.reflection`: server reflection limited to the published services;
* :mod:`gateway.api.query`: ``QueryService``, the query pipeline's entry point;
* :mod:`gateway.api.report`: ``ReportService``, a query's answer as a signed credit report;
* :mod:`gateway.api.audit`: ``AuditService``, checkpoints and proofs of the audit log;
* :mod:`gateway.api.billing`: ``BillingAdmin``, balances, top-ups and statements (finance);
* :mod:`gateway.api.policy_admin`: ``PolicyAdmin``, the policy workflow (security officers).

The servicers authenticate, translate messages and raise; the domain logic stays in its
package (:mod:`gateway.pipeline`, :mod:`gateway.audit`, :mod:`gateway.billing`,
:mod:`gateway.policyadmin`). :mod:`gateway.runtime.server` registers them all behind
:class:`Edge`. This package imports nothing itself.
"""
