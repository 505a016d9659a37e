"""One replica under load: TTFT, ITL and request rate at a given concurrency.

A continuous-batching replica holds C requests. It decodes them together and
interleaves the prefills of arriving requests (field guide §6.3, §6.4). Steady
state, per replica (times from sizing.latency on the profile):

    d95  = decode step at batch C, every sequence at the p95 context (I95 + O95)
    d50  = decode step at batch C at the typical context (I50 + O50 / 2)
    P95, P50 = prefill of one p95 / p50 prompt
    lambda = C / E2E                                   Little's law (field guide §8.3)
    rho  = lambda x P50                                share of time spent in prefill
    ITL  = d / (1 - rho)                               decode gets the rest of the time
    W    = rho x P50 / (2 (1 - rho))                   mean queue wait for the prefill
                                                       slot (M/D/1, Poisson arrivals)
    TTFT95 = W + P95 + d95                             wait, own prefill, the decode
                                                       step it is batched with
    E2E  = (W + P50 + d50 / 2) + O50 x d50 / (1 - rho) mean request time
           (+ o in TTFT95 and E2E: the engine's per-request overhead, sizing.engine)

lambda is the root of lambda x E2E(lambda) = C (bisection; the left side rises
from 0 to infinity as rho -> 1). The SLO is checked on TTFT95 and ITL95 (the
worst-case shape, "worst case, not average"); request rate, tokens/s and cost
use the typical shape (Little's law holds for means). rho -> 1 means the replica
cannot prefill the requests it needs to keep C in flight: unstable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable

from ridgeline.sizing.engine import EngineProfile
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.latency import StepTime, decode_step_time, prefill_time
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.precision import Precision


@dataclass(frozen=True)
class Shape:
    """Request lengths (tokens): p50 (typical) and p95 (tail)."""

    input_p50: int
    input_p95: int
    output_p50: int
    output_p95: int

    @property
    def context_p95(self) -> int:
        return self.input_p95 + self.output_p95

    @property
    def context_typical(self) -> int:
        return self.input_p50 + self.output_p50 // 2


@dataclass
class ServingPoint:
    concurrency: int
    stable: bool
    decode_step_p95_s: float
    decode_step_typical_s: float
    itl_p95_s: float
    ttft_p95_s: float
    prefill_p95_s: float
    queue_wait_s: float
    e2e_s: float                    # mean, typical shape
    rps: float                      # Little's law: C / E2E
    prefill_share: float            # rho
    output_tokens_per_s: float      # rps x typical output
    decode_bound: str
    allreduce_share: float          # of the p95 decode step
    notes: list[str] = field(default_factory=list)

    def meets(self, ttft_slo_s: float | None, itl_slo_s: float | None) -> bool:
        return self.stable and (ttft_slo_s is None or self.ttft_p95_s <= ttft_slo_s) and \
            (itl_slo_s is None or self.itl_p95_s <= itl_slo_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReplicaModel:
    """Step times of one replica configuration, cached (the operating-point search reuses them)."""

    def __init__(self, spec: ModelSpec, precision: Precision, hw: Hardware, shape: Shape,
                 tp: int = 1, pp: int = 1, microbatches: int | None = None,
                 max_batched_tokens: int | None = None, engine: EngineProfile | None = None):
        self.spec, self.precision, self.hw, self.shape = spec, precision, hw, shape
        self.engine = engine  # the serving engine's layer on top of the hardware (or None)
        self.tp, self.pp, self.microbatches = tp, pp, microbatches
        self.max_batched_tokens = max_batched_tokens
        # per-instance caches: the operating-point search asks for the same steps repeatedly
        self._decode: Callable[[int, int], StepTime] = lru_cache(None)(self._decode_uncached)
        self._prefill: Callable[[int], StepTime] = lru_cache(None)(self._prefill_uncached)

    def _decode_uncached(self, batch: int, context: int) -> StepTime:
        return decode_step_time(self.spec, self.precision, self.hw, batch, context, tp=self.tp,
                                pp=self.pp, microbatches=self.microbatches, engine=self.engine)

    def _prefill_uncached(self, tokens: int) -> StepTime:
        return prefill_time(self.spec, self.precision, self.hw, 1, tokens, tp=self.tp, pp=self.pp,
                            max_batched_tokens=self.max_batched_tokens, engine=self.engine)

    @property
    def request_overhead_s(self) -> float:
        """The engine's per-request overhead (TTFT and E2E), 0 without an engine layer."""
        return self.engine.request_overhead_s if self.engine is not None else 0.0

    def decode(self, batch: int, context: int) -> StepTime:
        return self._decode(int(batch), int(context))

    def prefill(self, tokens: int) -> StepTime:
        return self._prefill(int(tokens))

    def point(self, concurrency: int) -> ServingPoint:
        c = max(1, int(concurrency))
        s = self.shape
        d95 = self.decode(c, s.context_p95)
        d50 = self.decode(c, s.context_typical)
        p95 = self.prefill(s.input_p95).time_s
        p50 = self.prefill(s.input_p50).time_s
        o = self.request_overhead_s

        def e2e(lam: float) -> float:
            rho = lam * p50
            wait = rho * p50 / (2 * (1 - rho))
            return wait + p50 + d50.time_s / 2 + s.output_p50 * d50.time_s / (1 - rho) + o

        lo, hi = 0.0, 1.0 / p50 if p50 > 0 else 1e12
        for _ in range(80):  # lam x e2e(lam) rises monotonically from 0 to infinity on [0, 1/P50)
            mid = (lo + hi) / 2
            if mid * e2e(mid) < c:
                lo = mid
            else:
                hi = mid
        lam = lo
        rho = lam * p50
        stable = rho < 0.999
        wait = rho * p50 / (2 * (1 - rho)) if stable else float("inf")
        itl = d95.time_s / (1 - rho) if stable else float("inf")
        notes = []
        if rho > 0.5:
            notes.append(f"prefill takes {rho:.0%} of the replica's time at concurrency {c}: "
                         "TTFT is queue-dominated (field guide §8.1, the knee)")
        total95 = d95.time_s
        return ServingPoint(
            concurrency=c, stable=stable, decode_step_p95_s=d95.time_s,
            decode_step_typical_s=d50.time_s, itl_p95_s=itl,
            ttft_p95_s=wait + p95 + d95.time_s + o if stable else float("inf"),
            prefill_p95_s=p95, queue_wait_s=wait, e2e_s=e2e(lam) if stable else float("inf"),
            rps=lam, prefill_share=rho, output_tokens_per_s=lam * s.output_p50,
            decode_bound=d95.bound,
            allreduce_share=d95.allreduce_s / total95 if total95 > 0 else 0.0, notes=notes)

    def max_concurrency(self, ttft_slo_s: float | None, itl_slo_s: float | None,
                        upper: int) -> tuple[int, str]:
        """Largest C <= upper meeting both SLOs (0 if none), and which limit binds above it.

        TTFT95 and ITL95 both rise with C (bigger steps, more prefill traffic), so a
        bisection finds the edge.
        """
        upper = max(1, int(upper))
        first = self.point(1)
        if not first.meets(ttft_slo_s, itl_slo_s):
            return 0, self._why(first, ttft_slo_s, itl_slo_s)
        top = self.point(upper)
        if top.meets(ttft_slo_s, itl_slo_s):
            return upper, "search limit"
        lo, hi = 1, upper  # lo meets, hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.point(mid).meets(ttft_slo_s, itl_slo_s):
                lo = mid
            else:
                hi = mid
        return lo, self._why(self.point(hi), ttft_slo_s, itl_slo_s)

    @staticmethod
    def _why(p: ServingPoint, ttft_slo_s: float | None, itl_slo_s: float | None) -> str:
        if not p.stable:
            return "prefill saturation"
        if itl_slo_s is not None and p.itl_p95_s > itl_slo_s:
            return "ITL SLO"
        if ttft_slo_s is not None and p.ttft_p95_s > ttft_slo_s:
            return "TTFT SLO"
        return "none"
