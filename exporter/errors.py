"""The one exception type a request can fail with, carrying its HTTP answer.

Each stage of the pipeline (verify, decode, parse) raises ``Rejected`` with the
status code and the ``outcome`` label it is counted under, so the aiohttp layer
turns every refusal into the same JSON 4xx answer and the same metric.
"""

from __future__ import annotations

from typing import Literal, get_args

Outcome = Literal[
    "accepted",
    "duplicate",
    "invalid",
    "unauthorized",
    "too_large",
    "unsupported",
    "timeout",
    "method_not_allowed",
    "stopping",  # 503 after SIGTERM: a load balancer sends it to another replica
    "unavailable",  # the state store is down and the spool full (503: the provider retries)
]

OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class Rejected(Exception):
    """A request refused with ``status``; ``message`` is safe to show the caller."""

    def __init__(self, status: int, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


def invalid(message: str) -> Rejected:
    return Rejected(400, "invalid", message)
