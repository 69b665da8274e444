"""The query path, one module per step, in the order a query runs through them.

1. :mod:`gateway.pipeline.freetext`: the screen for identifiers in free text (every text field);
2. :mod:`gateway.pipeline.validation`: the request -> :class:`ValidQuery`, or INVALID_ARGUMENT;
   then :mod:`gateway.pipeline.limits`: the agency's rate and daily limits (RESOURCE_EXHAUSTED),
   and the counters harvesting alarms read;
3. :mod:`gateway.pipeline.decision`: the policy decision (datasets, tier, consent) per query;
4. :mod:`gateway.federation.fanout`: asking the departments concurrently under one deadline;
5. :mod:`gateway.pipeline.disclosure`: the ageing cut-off and the fields a tier may see;
6. :mod:`gateway.pipeline.query`: :class:`QueryPipeline`, the run that strings the steps
   together with billing (reserve, deliver, refund) and the audit record.

Steps 1 to 5 (and the limits) take plain values and need no gRPC server; nothing here imports
:mod:`gateway.api`: the query's gRPC entry point is :mod:`gateway.api.query`.
This package imports nothing itself.
"""
