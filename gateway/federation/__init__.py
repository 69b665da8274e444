"""Asking departments: one reused channel per department, a circuit breaker
each, a concurrent fan-out in which every department has its own deadline, and a
monitor that keeps departments out until their ``Describe`` agrees with the catalog.

>>> clients = {"tax": DepartmentClient("tax", "127.0.0.1:50061", credentials=None)}
>>> outcomes = await fan_out(clients, {"tax": lookup_request}, timeout_s=2.0)
>>> outcomes["tax"].status   # SECTION_STATUS_OK, _UNAVAILABLE or _TIMED_OUT
"""

from gateway.federation.breaker import BreakerState, CircuitBreaker
from gateway.federation.client import DepartmentClient, DepartmentState
from gateway.federation.departments import Backoff, DepartmentMonitor, RecheckSchedule
from gateway.federation.fanout import Outcome, fan_out

__all__ = [
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "DepartmentClient",
    "DepartmentMonitor",
    "DepartmentState",
    "Outcome",
    "RecheckSchedule",
    "fan_out",
]
