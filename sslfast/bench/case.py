"""One benchmark case: inputs, the baseline, sslfast's implementation, a float64 reference, and how to judge them."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


@dataclass
class Case:
    """``make_inputs()`` builds fresh inputs (a tuple); ``baseline(*inputs)`` and ``candidate(*inputs)`` run
    one step.

    Correctness is judged against a float64 reference, never one fp32 result against another:
    ``reference(*inputs)`` gives the float64 truth in the baseline's output layout (default: the baseline run
    on float64 copies of the inputs). ``error(reference_out, out)`` measures an output against it (``out`` in
    the candidate's layout; ``baseline_error`` measures the baseline's when its layout differs). The candidate
    passes when its error is at most ``factor`` × the baseline's own error + ``tolerance`` (the floor, for a
    baseline that happens to be exact). ``reference=False``: the case has no float64 twin (a stateful training
    loop); the candidate is then compared with the baseline within ``tolerance``.
    """

    op: str
    case: str
    dtype: str
    baseline_name: str
    make_inputs: Callable[[], tuple]
    baseline: Callable[..., Any]
    candidate: Callable[..., Any]
    error: Callable[[Any, Any], float]
    tolerance: float
    flops: Optional[float] = None  # floating-point operations of one step (attention: flash-attention's count)
    extra: dict = field(default_factory=dict)
    reference: Any = None
    baseline_error: Optional[Callable[[Any, Any], float]] = None
    factor: float = 2.0

    @property
    def key(self) -> str:
        return f"{self.op}/{self.case}"

    def reference_output(self, inputs: tuple):
        """The float64 truth for ``inputs`` (None for a case without one)."""
        if self.reference is False:
            return None
        if self.reference is not None:
            return self.reference(*inputs)
        return self.baseline(*float64_copies(inputs))

    def judge(self, inputs: tuple, baseline_out, candidate_out) -> dict:
        """``max_error`` (the candidate's), ``baseline_error``, ``tolerance`` (what the candidate may reach),
        ``reference`` (what both were compared with), ``correct`` and, when not, ``why``."""
        truth = self.reference_output(inputs)
        if truth is None:
            base_err, err = None, float(self.error(baseline_out, candidate_out))
            allowed, against = self.tolerance, "baseline"
        else:
            base_err = float((self.baseline_error or self.error)(truth, baseline_out))
            err = float(self.error(truth, candidate_out))
            allowed = self.factor * base_err + self.tolerance if math.isfinite(base_err) else self.tolerance
            against = "float64"
        correct = math.isfinite(err) and err <= allowed
        verdict = {"max_error": err, "baseline_error": base_err, "tolerance": allowed, "reference": against,
                   "correct": correct}
        if not correct:
            verdict["why"] = (f"{self.key}: error {err:.3e} against the {against} reference exceeds the tolerance "
                              f"{allowed:.3e}" + ("" if base_err is None else
                                                  f" ({self.factor:g} × the baseline's {base_err:.3e} + "
                                                  f"{self.tolerance:.1e})"))
        return verdict


def float64_copies(inputs: tuple) -> tuple:
    """Floating-point tensors as float64 leaves (keeping ``requires_grad``); everything else as it is."""
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            out.append(t.detach().double().requires_grad_(t.requires_grad))
        else:
            out.append(t)
    return tuple(out)


def float64_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 deep copy of a model: the reference a model case's outputs are measured against."""
    return copy.deepcopy(module).double()
