"""Asking departments: one reused channel per department, a circuit breaker
each, and a concurrent fan-out in which every department has its own deadline.

>>> clients = {"tax": DepartmentClient("tax", "127.0.0.1:50061", credentials=None)}
>>> outcomes = await fan_out(clients, {"tax": lookup_request}, timeout_s=2.0)
>>> outcomes["tax"].status   # SECTION_STATUS_OK, _UNAVAILABLE or _TIMED_OUT
"""

from gateway.federation.breaker import BreakerState, CircuitBreaker
from gateway.federation.client import DepartmentClient
from gateway.federation.fanout import Outcome, fan_out

__all__ = ["BreakerState", "CircuitBreaker", "DepartmentClient", "Outcome", "fan_out"]
