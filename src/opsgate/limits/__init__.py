"""Rate limits and budgets: counters in this process or in Redis, applied reserve-then-settle."""

from opsgate.limits.checks import Demand, Identity
from opsgate.limits.errors import CountersUnavailable, LimitsUnavailableError, RateLimitError
from opsgate.limits.limiter import CounterStore, Limiter, Reservation
from opsgate.limits.memory import MemoryCounters
from opsgate.limits.redis_counters import RedisCounters

__all__ = [
    "CounterStore",
    "CountersUnavailable",
    "Demand",
    "Identity",
    "Limiter",
    "LimitsUnavailableError",
    "MemoryCounters",
    "RateLimitError",
    "RedisCounters",
    "Reservation",
]
