"""The time of one engine step of any mix: decodes and prefill chunks, on the planner's roofline.

    sm = StepModel(spec, precision, hw, tp=1)
    sm.step_s(decode_seqs=32, decode_context_tokens=32 * 1200,
              chunks=[(512, 0), (2048, 4096)], sampled=33)        # one mixed step, seconds
    sm.decode_steps_s(decode_seqs=32, context_tokens=38400, growth=32, steps=100)  # np.ndarray

A continuous-batching engine (vLLM v1) runs one forward pass per step over every
scheduled token: each decoding sequence adds one token, each prefill chunk adds
`new` tokens after `prior` already cached. This module prices exactly that mix with
the kernels of `sizing.latency` (field guide §3.2, §3.3, §5.4), split by what each
kernel depends on:

    t(step) = body(m) + head(sampled)
              + L x [attn_decode(D, S) + attn_prefill(chunks)]           (one kernel each)
              + mla_decode(D) + mla_prefill(chunks)                      (MLA models only)

    m        tokens in the step: D decodes + the chunks' new tokens. body(m) = every kernel
             whose work depends only on m: the fused GEMMs (q/k/v, o, gate/up, down, with
             M = m), norms, rope and KV writes, MoE routing and experts, the embedding and
             the TP all-reduces.
    sampled  sequences reaching the LM head (the D decodes + chunks that end their prompt):
             final norm, LM head, sampling.
    S        sum over the D decoding sequences of the tokens each attends to (its cached
             tokens + the new one). Decode attention's FLOPs and bytes are linear in S
             (each sequence reads its own KV), so D sequences of any context mix cost what
             one sequence of S tokens with D queries costs.
    chunks   (new, prior) pairs; causal FLOPs new x (prior + (new + 1) / 2) each (§3.2).
    L        layers. Decode and prefill attention are priced as two kernels (as vLLM's MLA
             and FlashInfer backends run them; FlashAttention's single varlen kernel would
             overlap them a little): no overlap between memory-bound decode and
             compute-bound prefill attention is assumed.

With no chunks this is `latency.decode_step_time(B, c)` exactly (S = B (c + 1)); with
one chunk (I, 0) and no decodes it is `latency.prefill_time(1, I)` (tests hold both).

Caching by step shape: body(m) is cached for every m <= EXACT_TOKENS (all decode-only
steps and small mixes), and above that interpolated linearly between multiples of
GRID_TOKENS (GEMM time is piecewise linear in M: the error is far under 1%, tested);
head(sampled), the MLA terms and the per-chunk attention work are cached exactly. Decode
attention is evaluated in closed form (vectorized over a whole run of decode steps by
`decode_steps_s`), so nothing is bucketed by context: S is used exactly.

Only PP = 1 is modelled (a pipeline keeps PP batches in flight: a different engine). A
sliding window caps prefill attention but not decode attention (priced as full: conservative).
Tests: tests/test_sizing_simulation.py (python -m pytest tests/test_sizing_simulation.py -k step_model).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from ridgeline.errors import RidgelineError
from ridgeline.roofline.model import RooflineModel
from ridgeline.sizing.engine import EngineProfile
from ridgeline.sizing.hardware import Hardware
from ridgeline.sizing.latency import (Op, _allreduce, _attention_mla, _attention_standard,
                                      _edge_ops, _layer_ops, _Pricer)
from ridgeline.sizing.models import ModelSpec
from ridgeline.sizing.precision import Precision

EXACT_TOKENS = 2048      # body(m) priced exactly up to here
GRID_TOKENS = 64         # and interpolated between multiples of this above
# kernels whose work depends on the decode/prefill split, priced apart from body(m)
_CORE_OPS = frozenset({"attention", "mla_absorb_uk", "mla_absorb_uv", "kv_b_proj"})

Chunk = tuple[int, int]  # (new tokens, prior tokens already cached)
_STEPS = np.arange(4096, dtype=np.float64)  # step indices of a decode run, allocated once


class AttentionRoofline:
    """`RooflineModel.predict(flops, bytes, dtype).time_s` for one dtype, without the GEMM
    wave term, as plain arithmetic: scalar (`time_s`) and over arrays (`times_s`). The
    simulator calls it millions of times; the tests hold it equal to `predict`.

        t = max(floor, overhead + smax_p(bytes / bw, (flops + flops_half) / peak))
    """

    def __init__(self, model: RooflineModel, dtype: str):
        d = model.compute_dtype(dtype)
        self.floor_s = model.latency_floor_us * 1e-6
        self.overhead_s = model.overhead_us * 1e-6
        self.s_per_byte = 1.0 / (model.bandwidth_for(dtype) * 1e9)
        self.s_per_flop = 1.0 / (model.peak_TFLOPS[d] * 1e12)
        half = model.flops_half.get(d, 0.0)
        self.startup_s = half * self.s_per_flop if half > 0 else 0.0  # flops / tput = work + this
        p = model.overlap_p
        self.p = None if p is None or math.isinf(p) else p

    def time_s(self, flops: float, bytes_moved: float) -> float:
        mem = bytes_moved * self.s_per_byte
        comp = flops * self.s_per_flop + self.startup_s if flops > 0 else 0.0
        hi = mem if mem > comp else comp
        if self.p is not None and hi > 0:
            lo = comp if mem > comp else mem
            hi *= (1.0 + (lo / hi) ** self.p) ** (1.0 / self.p)
        t = self.overhead_s + hi
        return t if t > self.floor_s else self.floor_s

    def times_s(self, flops: np.ndarray, bytes_moved: np.ndarray) -> np.ndarray:
        mem = bytes_moved * self.s_per_byte
        comp = flops * self.s_per_flop
        if self.startup_s:
            comp = np.where(flops > 0, comp + self.startup_s, 0.0)
        hi = np.maximum(mem, comp)
        if self.p is not None:
            lo = np.minimum(mem, comp)
            ratio = np.divide(lo, hi, out=np.zeros_like(hi), where=hi > 0)
            hi = hi * (1.0 + ratio ** self.p) ** (1.0 / self.p)
        return np.maximum(self.floor_s, self.overhead_s + hi)


class StepModel:
    """Step times of one replica configuration (model, precision, hardware, TP), cached."""

    def __init__(self, spec: ModelSpec, precision: Precision, hw: Hardware, tp: int = 1,
                 engine: EngineProfile | None = None):
        self.spec, self.precision, self.hw, self.tp = spec, precision, hw, tp
        # the serving engine's layer (sizing.engine): its per-step overhead sits in body(m),
        # its per-request overhead is read by the simulation (simulation.engine)
        self.engine = engine
        self._pr = _Pricer(spec, precision, hw, tp, engine)
        # decode attention is priced on the *sum* of contexts, where a window would cap the
        # sum instead of each sequence: it is priced without one (full attention, the
        # conservative side; prefill chunks keep the window)
        flat = replace(spec, sliding_window=0) if spec.sliding_window else spec
        self._flat = _Pricer(flat, precision, hw, tp, engine)
        self.layers = spec.num_layers
        self._attn = AttentionRoofline(self._pr.model, self._pr.base_dtype)  # engine's roofline
        self._body: dict[int, float] = {}
        self._head: dict[int, float] = {}
        self._mla_decode: dict[int, float] = {}
        self._decode_coef: dict[int, tuple[float, float, float]] = {}
        self._chunk_work: dict[Chunk, tuple[float, float, float]] = {}
        self._kv_b: dict[int, float] = {}
        self._run: dict[int, tuple[float, float, float, float]] = {}
        self._decode_eff: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    @property
    def basis(self) -> str:
        """Where the step times come from: "measured" | "reference" | "datasheet"."""
        return self.hw.source

    # -- pieces --------------------------------------------------------------------------------
    def _body_exact(self, m: int) -> float:
        pr = self._pr
        total = 0.0
        for kind, n in self.spec.layer_kinds():
            ops, _ = _layer_ops(pr, kind, "decode", float(m), 1, 1, 0, n)
            total += sum(op.total_s for op in ops if op.name not in _CORE_OPS)
        first, _ = _edge_ops(pr, float(m), 0.0)
        total += sum(op.total_s for op in first)
        ar, _, _ = _allreduce(pr, float(m), self.layers)
        # the engine's per-step overhead: a constant of every step, so body(m) carries it
        engine_s = self.engine.step_overhead_s if self.engine is not None else 0.0
        return total + (ar.total_s if ar else 0.0) + engine_s

    def body_s(self, m: int) -> float:
        """Every kernel of a step of m tokens whose work depends only on m (see module doc)."""
        t = self._body.get(m)
        if t is not None:
            return t
        if m <= EXACT_TOKENS:
            t = self._body_exact(m)
        else:
            lo = m - m % GRID_TOKENS
            if lo == m:
                t = self._body_exact(m)
            else:
                a, b = self.body_s(lo), self.body_s(lo + GRID_TOKENS)
                t = a + (b - a) * (m - lo) / GRID_TOKENS
        self._body[m] = t
        return t

    def head_s(self, sampled: int) -> float:
        """Final norm, LM head and sampling for `sampled` sequences (0 when none)."""
        t = self._head.get(sampled)
        if t is None:
            _, last = _edge_ops(self._pr, 1.0, float(sampled))
            t = self._head[sampled] = sum(op.total_s for op in last)
        return t

    def _decode_attention_ops(self, seqs: int, context_sum: int) -> list[Op]:
        # one "sequence" of context_sum tokens and `seqs` queries: the same FLOPs and bytes
        # as `seqs` sequences whose contexts add up to context_sum (both are linear in it)
        attention = _attention_mla if self.spec.is_mla else _attention_standard
        return attention(self._flat, "decode", float(seqs), 1, 1, context_sum - 1, 1)

    def _coef(self, seqs: int) -> tuple[float, float, float]:
        """(FLOPs per context token, bytes per context token, bytes of the queries)."""
        c = self._decode_coef.get(seqs)
        if c is None:
            a1 = next(op for op in self._decode_attention_ops(seqs, 1) if op.name == "attention")
            a2 = next(op for op in self._decode_attention_ops(seqs, 2) if op.name == "attention")
            df, db = a2.flops - a1.flops, a2.bytes - a1.bytes
            c = self._decode_coef[seqs] = (df, db, a1.bytes - db)
        return c

    def mla_decode_s(self, seqs: int) -> float:
        """MLA's absorbed W_UK / W_UV products for `seqs` decode queries (0 otherwise)."""
        if not self.spec.is_mla or seqs <= 0:
            return 0.0
        t = self._mla_decode.get(seqs)
        if t is None:
            ops = self._decode_attention_ops(seqs, seqs)
            t = self._mla_decode[seqs] = self.layers * sum(
                op.time_s for op in ops if op.name in ("mla_absorb_uk", "mla_absorb_uv"))
        return t

    def _decode_efficiency(self, seqs: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(log2 KV bytes per sequence, efficiency) of the measured decode-attention curve at
        batch `seqs` (roofline.efficiency: multilinear in log2, so linear in log2 bytes at a
        fixed batch); None when the profile has none (or the model is MLA: another kernel)."""
        if seqs in self._decode_eff:
            return self._decode_eff[seqs]
        curve = None if self.spec.is_mla else self._pr.efficiency.curve(
            "attention_decode", self._pr.base_dtype)
        out = None
        if curve is not None:
            s = self.spec
            # query heads per KV head on one rank, as latency._attention_standard counts them
            ratio = (s.num_attention_heads / self.tp) / (s.num_kv_heads / min(self.tp,
                                                                                s.num_kv_heads))
            xs = curve.grid("kv_bytes_per_seq")
            out = (np.log2(xs), np.array([min(1.0, curve.at(batch=seqs, kv_bytes_per_seq=x,
                                                            q_per_kv=ratio, head_dim=s.head_dim))
                                          for x in xs]))
        self._decode_eff[seqs] = out
        return out

    def _decode_factor(self, seqs: int, context_sum: np.ndarray | float) -> np.ndarray | float:
        """Measured decode-attention efficiency of `seqs` sequences averaging
        context_sum / seqs tokens each (1 where not measured)."""
        eff = self._decode_efficiency(seqs)
        if eff is None:
            return 1.0
        per_seq = np.maximum(np.asarray(context_sum, dtype=np.float64) / seqs, 1.0)
        kv_per_token = self._coef(seqs)[1]  # K and V bytes per cached token
        return np.interp(np.log2(per_seq * kv_per_token), eff[0], eff[1])

    def decode_attention_s(self, seqs: int, context_sum: float) -> float:
        """Decode attention of all layers: `seqs` queries over `context_sum` cached tokens."""
        if seqs <= 0:
            return 0.0
        df, db, q = self._coef(seqs)
        t = self.layers * self._attn.time_s(df * context_sum, db * context_sum + q)
        return t / float(self._decode_factor(seqs, context_sum))

    def _chunk(self, new: int, prior: int) -> tuple[float, float, float]:
        """(FLOPs, bytes, FLOPs / the measured prefill-attention efficiency at `new` tokens,
        1 where not measured) of one chunk's attention."""
        key = (new, prior)
        w = self._chunk_work.get(key)
        if w is None:
            attention = _attention_mla if self.spec.is_mla else _attention_standard
            op = next(o for o in attention(self._pr, "prefill", float(new), 1, new, prior, 1)
                      if o.name == "attention")
            eff = self._pr.efficiency.factor("attention_prefill", self._pr.base_dtype,
                                             tokens=new, head_dim=self.spec.head_dim) or 1.0
            w = self._chunk_work[key] = (op.flops, op.bytes, op.flops / eff)
        return w

    def prefill_attention_s(self, chunks: Sequence[Chunk]) -> float:
        """Prefill attention of all layers for the chunks, as one kernel per layer."""
        if not chunks:
            return 0.0
        flops = moved = slowed = 0.0
        for new, prior in chunks:
            f, b, s = self._chunk(new, prior)
            flops += f
            moved += b
            slowed += s
        t = self.layers * self._attn.time_s(flops, moved)
        if flops > 0 and not self.spec.is_mla:
            t *= slowed / flops  # the chunks' FLOP-weighted efficiency, as one kernel
        if self.spec.is_mla:
            # kv_b_proj expands the latent of every token the chunks attend to (new + prior)
            rows = sum(new + prior for new, prior in chunks)
            kv = self._kv_b.get(rows)
            if kv is None:
                s = self.spec
                hq = s.num_attention_heads / self.tp
                kv = self._kv_b[rows] = self.layers * self._pr.gemm(
                    "kv_b_proj", rows, s.kv_lora_rank, hq * (s.qk_nope_head_dim + s.v_head_dim),
                    True, 1).time_s
            t += kv
        return t

    # -- steps ---------------------------------------------------------------------------------
    def step_s(self, decode_seqs: int, decode_context_tokens: float,
               chunks: Sequence[Chunk] = (), sampled: int | None = None) -> float:
        """Seconds of one step: `decode_seqs` decodes attending to `decode_context_tokens` in
        all (each its cached tokens + 1), plus prefill `chunks` of (new, prior) tokens;
        `sampled` sequences reach the LM head (default: every decode and every chunk)."""
        m = decode_seqs + sum(new for new, _ in chunks)
        if m <= 0:
            return 0.0
        if sampled is None:
            sampled = decode_seqs + len(chunks)
        return (self.body_s(m) + self.head_s(sampled)
                + self.decode_attention_s(decode_seqs, decode_context_tokens)
                + self.mla_decode_s(decode_seqs) + self.prefill_attention_s(chunks))

    def decode_steps_s(self, decode_seqs: int, context_tokens: float, growth: float,
                       steps: int) -> np.ndarray:
        """Seconds of `steps` consecutive decode-only steps of `decode_seqs` sequences whose
        attended tokens add up to context_tokens + j x growth at step j (vectorized)."""
        c = self._run.get(decode_seqs)
        if c is None:
            fixed = (self.body_s(decode_seqs) + self.head_s(decode_seqs)
                     + self.mla_decode_s(decode_seqs))
            c = self._run[decode_seqs] = (fixed, *self._coef(decode_seqs))
        fixed, df, db, q = c
        j = _STEPS[:steps] if steps <= len(_STEPS) else np.arange(steps, dtype=np.float64)
        a, L = self._attn, self.layers
        if self._decode_efficiency(decode_seqs) is not None:
            s = context_tokens + growth * j
            return fixed + L * a.times_s(df * s, db * s + q) / self._decode_factor(decode_seqs, s)
        if a.p is None:
            # max(floor, overhead + max(mem, comp)) of two affine functions of j: affine
            # pieces, so the whole run is two multiply-adds and two maxima
            s0, cf = context_tokens * df, df * a.s_per_flop
            comp = (fixed + L * (a.overhead_s + s0 * a.s_per_flop + (a.startup_s if s0 > 0 else 0))
                    ) + (L * cf * growth) * j
            mem = (fixed + L * (a.overhead_s + (context_tokens * db + q) * a.s_per_byte)) \
                + (L * db * a.s_per_byte * growth) * j
            out = np.maximum(comp, mem, out=comp)
            return np.maximum(out, fixed + L * a.floor_s, out=out)
        s = context_tokens + growth * j
        return fixed + L * a.times_s(df * s, db * s + q)


class ConstantStepModel:
    """Every step takes `step_s` seconds whatever it holds (hand-checkable simulations)."""

    basis = "constant"

    def __init__(self, step_s: float):
        if not step_s > 0:
            raise RidgelineError(f"a step time must be > 0 s, got {step_s}")
        self.step_time_s = float(step_s)

    def step_s(self, decode_seqs: int, decode_context_tokens: float,
               chunks: Sequence[Chunk] = (), sampled: int | None = None) -> float:
        return self.step_time_s if decode_seqs + sum(n for n, _ in chunks) > 0 else 0.0

    def decode_steps_s(self, decode_seqs: int, context_tokens: float, growth: float,
                       steps: int) -> np.ndarray:
        return np.full(steps, self.step_time_s)
