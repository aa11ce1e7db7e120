"""One benchmark case: inputs, the baseline, sslfast's implementation, and how to compare them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Case:
    """``make_inputs()`` builds fresh inputs (a tuple); ``baseline(*inputs)`` and ``candidate(*inputs)`` run
    one step; ``error(baseline_out, candidate_out)`` is the max error compared against ``tolerance``."""

    op: str
    case: str
    dtype: str
    baseline_name: str
    make_inputs: Callable[[], tuple]
    baseline: Callable[..., Any]
    candidate: Callable[..., Any]
    error: Callable[[Any, Any], float]
    tolerance: float
    flops: float | None = None  # floating-point operations of one step (attention: flash-attention's count)
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.op}/{self.case}"
