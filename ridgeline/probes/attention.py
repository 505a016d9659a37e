"""Attention probe: decode attention over a KV cache, and causal prefill, against batch and length.

The planner prices attention at the roofline of its minimal work (ridgeline.sizing.latency,
`_attention_standard`); at long context decode attention streams the KV cache at well
under the bandwidth ceiling (issue 13). This probe measures by how much: the fitter divides
the roofline time of the counts below by the measured time, an efficiency over
(batch, context) for decode and over tokens for prefill, which the planner applies.

Grouped-query attention: q_heads query heads, kv_heads KV heads, head_dim each (default
32 / 8 / 128: a Llama-3 8B layer; 70B at TP 2 has 32 / 4 per GPU); query head h reads KV head
h // (q_heads / kv_heads). The KV cache has the compute dtype. b = bytes per element.

decode (kernel="decode"): `batch` sequences, each one new query token against `context`
cached tokens (tokens = 1):
    out[s, h] = softmax(q[s, h] . K[s, g]^T / sqrt(head_dim)) V[s, g]
    flops         = 4 * batch * context * q_heads * head_dim             (q.K and P.V)
    bytes_read    = batch * context * 2 * kv_heads * head_dim * b        (K and V, once)
                  + batch * q_heads * head_dim * b                       (q)
    bytes_written = batch * q_heads * head_dim * b
prefill (kernel="prefill"): causal self-attention of `batch` sequences of `tokens` new
tokens, no prior cache (context = tokens):
    flops         = 4 * batch * q_heads * head_dim * tokens * (tokens + 1) / 2
    bytes_read    = batch * tokens * (2 * kv_heads + q_heads) * head_dim * b
    bytes_written = batch * tokens * q_heads * head_dim * b
These are the planner's counts (decode with context = prior + new, prefill with prior 0),
so efficiencies transfer to it unchanged. `kv_bw_GBps` is the cache bytes over the time.

Providers:
- "torch_sdpa": torch.nn.functional.scaled_dot_product_attention, the call `ridgeline
  validate` makes (ridgeline.validation.transformer.attention): enable_gqa=True where
  torch >= 2.5 has it, else the KV heads repeated inside the call (recorded as `gqa`).
  Decode and prefill (is_causal=True).
- "triton" (CUDA/ROCm, decode only): ridgeline.kernels.flash_decode, flash-decoding
  (split-K over the context, then a reduction) on a contiguous cache; its config
  (tile, split count) is recorded as `config` and `num_splits`.

Sweep (per dtype: bf16, and fp16 on a GPU except with --quick):
    GPU decode   batch (1, 4, 16, 64, 256) x context (512, 2048, 8192, 32768)
                 quick: (1, 16, 64) x (2048, 32768)
    GPU prefill  tokens (128, 512, 2048, 8192), batch = ceil(8192 / tokens); quick: 512, 8192
    CPU decode   batch (1, 4, 16) x context (256, 1024, 4096), quick (1, 8) x (256, 1024),
                 where the cache is <= 64 MiB; the full sweep at 2, 4 and 8 query heads per
                 KV head and head_dim 128 and 64 (contexts doubled at 64: the same KV bytes)
    CPU prefill  tokens (128, 512, 1024), batch 1, head_dim 128 and 64; quick: 128, 512
A case whose working set does not fit in half the free memory is waived with the sizes.

Honest timing (the rules ridgeline.probes.rotation keeps for the four rotating probes):
- Caches: each case rotates through `copies` sets of (q, K, V) whose total is at least
  `rotate_factor` (4 on GPUs, 2 on the CPU) times the last-level cache
  (rotation.cache_bytes_for). The first set is random; the others
  are copies of it (other memory, the same values: a cache cannot tell, and filling them
  costs a copy, not a random draw).
  GPU: flush_cache=False and each sample is a whole number of rotations, at least 16
  launches or 1 GiB of working set (whichever comes first), replayed as one CUDA graph
  when it holds more than one launch: microsecond kernels are not timed as launch gaps,
  and the longest (~10 ms, a 34 GB cache) are not replayed 16 times.
  CPU: one call per sample (the host clock has no launch gap to hide) while successive
  calls walk the copies, so a set comes back only after the others (>= the cache) went by.
- Validation: before timing, copy 0's output is compared with a float32 reference
  (explicit softmax, KV heads repeated; chunked so its temporaries stay bounded):
  |out - ref| <= rtol * (|ref| + rms of the row), rtol 2**-6 for bf16, 2**-8 for fp16.
- Budgets: GPU 10 ms warm-up + 40 ms of samples per case (--quick 5 + 15); CPU 5 + 40
  (--quick 2 + 15), at least 3 samples. On 2 shared cores the CPU run takes ~7 s (--quick
  ~1 s): CPU bf16 SDPA streams the cache at ~0.2-1 GB/s, hence its small grid.

Options (ctx.options, or ctx.options["attention"]), for tests and the API:
    kernels: ["decode", "prefill"]   dtypes: ["bf16", ...]   providers: ["torch_sdpa", ...]
    batches, contexts (decode)   prefill_tokens, prefill_batch (prefill)
    q_heads, kv_heads, head_dim   rotate_factor, max_copies   warmup_ms, rep_ms, min_reps, max_reps
    block_n, num_splits (the Triton kernel's tile and split count; default: its heuristic)

Run: `ridgeline profile --probes attention [--quick]`; tests: tests/test_probes_attention.py.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from ridgeline.counts.attention import kv_cache_bytes, work
from ridgeline.dtypes import torch_dtype
from ridgeline.errors import RidgelineError
from ridgeline.probes import rotation
from ridgeline.probes.base import Case, ProbeContext
from ridgeline.probes.gemv import triton_waiver
from ridgeline.probes.rotation import Rotation, RotatingProbe
from ridgeline.records import make_record
from ridgeline.timing import Work

KERNELS = ("decode", "prefill")
DTYPES = ("bf16", "fp16", "fp32")
PROVIDERS = {"decode": ("torch_sdpa", "triton"), "prefill": ("torch_sdpa",)}
HEADS = {"q_heads": 32, "kv_heads": 8, "head_dim": 128}   # a Llama-3 8B layer

GPU_BATCHES = (1, 4, 16, 64, 256)
GPU_CONTEXTS = (512, 2048, 8192, 32768)
GPU_QUICK_BATCHES = (1, 16, 64)
GPU_QUICK_CONTEXTS = (2048, 32768)
GPU_PREFILL_TOKENS = (128, 512, 2048, 8192)
GPU_QUICK_PREFILL_TOKENS = (512, 8192)
PREFILL_MIN_BATCH_TOKENS = 8192   # GPU prefill batch: enough sequences for this many tokens
CPU_BATCHES = (1, 4, 16)
CPU_CONTEXTS = (256, 1024, 4096)
CPU_QUICK_BATCHES = (1, 8)
CPU_QUICK_CONTEXTS = (256, 1024)
CPU_MAX_KV_BYTES = 64 * 2**20     # CPU SDPA streams ~0.5 GB/s in bf16 on 2 cores: bound the run
# CPU SDPA runs decode compute-bound (about 4.5 GFLOP/s in bf16 on a 2-core host, whatever the
# heads), so its efficiency per KV byte scales with the query heads per KV head: the full CPU
# sweep measures three ratios (KV heads as HEADS); a GPU's decode kernels stream the KV and
# its quick sweep needs one, HEADS' own
CPU_Q_PER_KV = (2, 4, 8)
# ... and two head sizes (Llama's 128, the 64 of GPT-2-class and small models): CPU SDPA does
# 10-15% less per FLOP on the shorter head, which the work counts cannot see
CPU_HEAD_DIMS = (128, 64)
CPU_PREFILL_TOKENS = (128, 512, 1024)
CPU_QUICK_PREFILL_TOKENS = (128, 512)

MIN_SAMPLE_BYTES = 2**30          # GPU: fewer than 16 launches once a sample moves this much
# CPU timer budgets (not quick, quick); a GPU's are rotation.GPU_BUDGET
CPU_BUDGET = {False: {"warmup_ms": 5.0, "rep_ms": 40.0, "min_reps": 3},
              True: {"warmup_ms": 2.0, "rep_ms": 15.0, "min_reps": 3}}
REFERENCE_BYTES = {True: 2**30, False: 256 * 2**20}   # fp32 reference temporaries (GPU, CPU)

# |out - ref| <= rtol * (|ref| + rms(row)): the output is rounded once, and flash kernels
# round the softmax weights to the input dtype before P.V (an error on the row's scale)
RTOL = {"bf16": 2**-6, "fp16": 2**-8, "fp32": 1e-4}


# --- sweep and timing rules (pure) ----------------------------------------------------

def prefill_batch(tokens: int, device_kind: str) -> int:
    """GPU: enough sequences for PREFILL_MIN_BATCH_TOKENS tokens in all; CPU: one."""
    if device_kind == "cpu":
        return 1
    return max(1, math.ceil(PREFILL_MIN_BATCH_TOKENS / tokens))


def launches_per_sample(copies: int, copy_bytes: int, device_kind: str) -> int:
    """GPU: whole rotations, >= 16 launches or >= MIN_SAMPLE_BYTES of working set, whichever
    needs fewer rounds (a 34 GB cache is not replayed 16 times). CPU: 1, the copies rotate
    across samples: the host clock has no launch gap to hide, and successive calls walk
    the copies, so a set comes back only after the others (>= the cache) went by."""
    return rotation.launches_per_sample(copies, device_kind, cpu_whole_rotation=False,
                                        copy_bytes=copy_bytes, enough_bytes=MIN_SAMPLE_BYTES)


def timing_budget(device_kind: str, quick: bool) -> dict[str, float]:
    """Timer budgets per case (see the module docstring for what a run then costs)."""
    return rotation.timing_budget(device_kind, quick, CPU_BUDGET)


def _heads(opts: dict[str, Any]) -> dict[str, int]:
    heads = {key: int(opts.get(key, default)) for key, default in HEADS.items()}
    if min(heads.values()) < 1 or heads["q_heads"] % heads["kv_heads"]:
        raise RidgelineError(f"attention: q_heads={heads['q_heads']} must be a positive multiple "
                             f"of kv_heads={heads['kv_heads']} (head_dim={heads['head_dim']})")
    return heads


class AttentionProbe(RotatingProbe):
    name = "attention"
    description = "decode attention over a KV cache and causal prefill, against batch and length"

    # --- what runs here --------------------------------------------------------------

    def waiver(self, params: dict[str, Any], ctx: ProbeContext) -> str | None:
        """Why this (kernel, provider, dtype) cannot run on ctx.device, or None."""
        dev = ctx.device
        kernel, provider, dtype = params["kernel"], params["provider"], params["dtype"]
        if dtype not in DTYPES:
            return f"unknown dtype {dtype} for attention (known: {', '.join(DTYPES)})"
        if provider not in PROVIDERS.get(kernel, ()):
            return f"provider {provider} does not run {kernel} attention"
        if provider == "triton":
            if reason := triton_waiver(dev):
                return reason
            if dtype == "fp32":
                return "the Triton flash-decoding kernel takes bf16/fp16"
        if not dev.supports(dtype):
            return f"{dtype} is not supported on {dev.name}"
        if torch_dtype(dtype) is None:
            return f"this torch has no {dtype} dtype"
        return None

    def cases(self, ctx: ProbeContext) -> list[Case]:
        opts = self.options(ctx)
        kind = ctx.device.kind
        gpu = ctx.device.is_gpu
        heads = _heads(opts)
        kernels = list(opts.get("kernels", KERNELS))
        unknown = [k for k in kernels if k not in KERNELS]
        if unknown:
            raise RidgelineError(f"attention: unknown kernel(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(KERNELS)}")
        dtypes = list(opts.get("dtypes", ["bf16", "fp16"] if gpu and not ctx.quick else ["bf16"]))
        only = set(opts.get("providers", [])) or None

        points: list[tuple[str, int, int]] = []   # (kernel, batch, context)
        if "decode" in kernels:
            if gpu:
                batches = GPU_QUICK_BATCHES if ctx.quick else GPU_BATCHES
                contexts = GPU_QUICK_CONTEXTS if ctx.quick else GPU_CONTEXTS
            else:
                batches = CPU_QUICK_BATCHES if ctx.quick else CPU_BATCHES
                contexts = CPU_QUICK_CONTEXTS if ctx.quick else CPU_CONTEXTS
            batches = [int(b) for b in opts.get("batches", batches)]
            contexts = [int(c) for c in opts.get("contexts", contexts)]
            points += [("decode", b, c) for b, c in itertools.product(batches, contexts)]
        if "prefill" in kernels:
            if gpu:
                tokens = GPU_QUICK_PREFILL_TOKENS if ctx.quick else GPU_PREFILL_TOKENS
            else:
                tokens = CPU_QUICK_PREFILL_TOKENS if ctx.quick else CPU_PREFILL_TOKENS
            for t in (int(t) for t in opts.get("prefill_tokens", tokens)):
                batch = int(opts.get("prefill_batch", prefill_batch(t, kind)))
                points.append(("prefill", batch, t))

        # the CPU's default decode grid stays within its time budget
        kv_cap = None if gpu or "batches" in opts or "contexts" in opts else CPU_MAX_KV_BYTES

        # decode head layouts: HEADS (or the options'), and on the CPU's full sweep the
        # other query-per-KV-head ratios of CPU_Q_PER_KV at each head size of CPU_HEAD_DIMS
        # (prefill: each head size); a shorter head runs proportionally longer contexts, so
        # the KV bytes per sequence, the decode curve's axis, stay on one grid
        layouts = [heads]
        prefill_layouts = [heads]
        if not gpu and not ctx.quick and not {"q_heads", "head_dim"} & set(opts):
            layouts = [{**heads, "q_heads": heads["kv_heads"] * r, "head_dim": d}
                       for d in CPU_HEAD_DIMS for r in CPU_Q_PER_KV]
            prefill_layouts = [{**heads, "head_dim": d} for d in CPU_HEAD_DIMS]

        def params():
            for dtype in dtypes:
                for kernel, batch, context in points:
                    for layout in layouts if kernel == "decode" else prefill_layouts:
                        n = context
                        if kernel == "decode":
                            n = context * heads["head_dim"] // layout["head_dim"]
                            if kv_cap and kv_cache_bytes(batch, n, layout["kv_heads"],
                                                         layout["head_dim"], dtype) > kv_cap:
                                continue
                        for provider in PROVIDERS[kernel]:
                            if not only or provider in only:
                                yield {"kernel": kernel, "provider": provider, "dtype": dtype,
                                       "batch": batch, "context": n,
                                       "tokens": 1 if kernel == "decode" else n, **layout}
        return self.plan(ctx, params(), waive_by=("kernel", "dtype", "provider"))

    # --- one case --------------------------------------------------------------------

    def pool_key(self, params: dict[str, Any]) -> tuple:
        """The providers of one case share its inputs."""
        return tuple(params[k] for k in ("kernel", "dtype", "batch", "context", "q_heads",
                                         "kv_heads", "head_dim"))

    def measure(self, ctx: ProbeContext, pool: Rotation, p: dict[str, Any]) -> dict[str, Any]:
        from ridgeline.validation.transformer import attention, sdpa_has_gqa

        opts = self.options(ctx)
        kernel, provider, dtype = p["kernel"], p["provider"], p["dtype"]
        batch, context = int(p["batch"]), int(p["context"])
        hq, hkv, d = int(p["q_heads"]), int(p["kv_heads"]), int(p["head_dim"])
        causal = kernel == "prefill"
        qs, ks, vs, copies = pool["q"], pool["k"], pool["v"], pool.copies
        config = num_splits = None
        gqa = "none" if hq == hkv else ("native" if sdpa_has_gqa() else "repeat")

        if provider == "torch_sdpa":
            native = sdpa_has_gqa()

            def call(i):
                return attention(qs[i], ks[i], vs[i], causal, native)    # (B, Hq, T, D)
        else:
            from ridgeline.kernels.flash_decode import DecodeConfig, flash_decode, resolve_config

            gqa = "kernel"
            q3 = [q.squeeze(2) for q in qs]                               # (B, Hq, D) views
            want = DecodeConfig(block_n=int(opts.get("block_n", 64)),
                                num_splits=opts.get("num_splits"))
            cfg = resolve_config(q3[0], ks[0], want)      # chosen once, before timing
            config, num_splits = str(cfg), cfg.num_splits

            def call(i):
                return flash_decode(q3[i], ks[i], vs[i], config=cfg)     # (B, Hq, D)

        y = call(0)
        ref = attention_reference(qs[0], ks[0], vs[0], causal,
                                  max_bytes=REFERENCE_BYTES[ctx.device.is_gpu])
        rtol = RTOL[dtype]
        validated, max_err = check_output(y.reshape(ref.shape), ref, rtol)
        del y, ref

        fl, br, bw = work(kernel, batch, context, hq, hkv, d, dtype)
        timing = rotation.time_rotating(
            ctx, call, copies, Work(bytes=br + bw, flops=fl),
            launches=launches_per_sample(copies, pool.copy_bytes, ctx.device.kind),
            budget=rotation.with_overrides(timing_budget(ctx.device.kind, ctx.quick), opts))
        rec = make_record(
            probe="attention", provider=provider, kernel=kernel, dtype=dtype, timing=timing,
            validated=validated, bytes_read=br, bytes_written=bw, flops=fl,
            telemetry=ctx.telemetry(), max_abs_error=max_err,
            batch=batch, context=context, tokens=int(p["tokens"]),
            q_heads=hq, kv_heads=hkv, head_dim=d,
        )
        kv = kv_cache_bytes(batch, context, hkv, d, dtype)
        rec.update({
            "kv_bytes": kv, "kv_bw_GBps": rotation.rate_GBps(kv, rec),
            "causal": causal, "gqa": gqa, "config": config, "num_splits": num_splits,
            **pool.fields(), "rtol": rtol,
        })
        return rec

    # --- rotated inputs --------------------------------------------------------------

    def build_pool(self, ctx: ProbeContext, p: dict[str, Any]) -> Rotation:
        import torch

        kernel, dtype = p["kernel"], p["dtype"]
        batch, context = int(p["batch"]), int(p["context"])
        hq, hkv, d = int(p["q_heads"]), int(p["kv_heads"]), int(p["head_dim"])
        q_len = 1 if kernel == "decode" else context
        copy_bytes = work(kernel, batch, context, hq, hkv, d, dtype)[1]   # q, K, V
        pool = rotation.size_rotation(
            ctx, self.options(ctx), copy_bytes,
            lambda need, free: (f"{kernel} batch {batch} x {context} tokens needs "
                                f"{need / 1e9:.2f} GB of q, K, V; half of the "
                                f"{free / 1e9:.2f} GB free is less"))
        dev = ctx.torch_device
        tdtype = torch_dtype(dtype)
        gen = torch.Generator(device=dev)
        gen.manual_seed(1000 * batch + context)
        q0 = torch.randn(batch, hq, q_len, d, generator=gen, device=dev, dtype=tdtype)
        k0 = torch.randn(batch, hkv, context, d, generator=gen, device=dev, dtype=tdtype)
        v0 = torch.randn(batch, hkv, context, d, generator=gen, device=dev, dtype=tdtype)
        pool.inputs = {"q": [q0], "k": [k0], "v": [v0]}
        for _ in range(pool.copies - 1):  # other memory, same values: see the module docstring
            pool["q"].append(q0.clone())
            pool["k"].append(k0.clone())
            pool["v"].append(v0.clone())
        return pool


# --- reference and check --------------------------------------------------------------

def attention_reference(q, k, v, causal: bool, max_bytes: int = 2**30):
    """float32 (B, Hq, T, D): KV heads repeated to the query heads, explicit softmax.

    q (B, Hq, T, D), k and v (B, Hkv, S, D); query row t sits at position S - T + t, and
    with `causal` sees the keys up to it. Chunked over sequences and query rows so the
    fp32 temporaries (repeated K and V, scores, weights) stay near `max_bytes`.
    """
    import torch

    batch, hq, t_len, d = q.shape
    hkv, s_len = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d)
    kv_seq = 2 * hq * s_len * d * 4                 # one sequence's repeated K and V, fp32
    row = 2 * hq * s_len * 4                        # scores and weights of one query row
    seqs = max(1, min(batch, max_bytes // (kv_seq + t_len * row)))
    rows = t_len if seqs > 1 else max(1, min(t_len, (max_bytes - kv_seq) // row))
    out = torch.empty(batch, hq, t_len, d, dtype=torch.float32, device=q.device)
    keys = torch.arange(s_len, device=q.device)
    for b0 in range(0, batch, seqs):
        kr = k[b0:b0 + seqs].float().repeat_interleave(group, dim=1)   # (n, Hq, S, D)
        vr = v[b0:b0 + seqs].float().repeat_interleave(group, dim=1)
        for t0 in range(0, t_len, rows):
            qc = q[b0:b0 + seqs, :, t0:t0 + rows].float()                 # (n, Hq, r, D)
            scores = (qc @ kr.transpose(-1, -2)) * scale                  # (n, Hq, r, S)
            if causal:
                pos = s_len - t_len + torch.arange(t0, t0 + qc.shape[2], device=q.device)
                scores.masked_fill_(keys[None, :] > pos[:, None], float("-inf"))
            out[b0:b0 + seqs, :, t0:t0 + rows] = scores.softmax(dim=-1) @ vr
        del kr, vr
    return out


def check_output(y, ref, rtol: float) -> tuple[bool, float]:
    """|y - ref| <= rtol * (|ref| + rms of ref's row) everywhere; (ok, max |y - ref|)."""
    import torch

    err = (y.float() - ref).abs()
    row_rms = ref.pow(2).mean(dim=-1, keepdim=True).sqrt()
    ok = bool(torch.isfinite(y).all()) and bool((err <= rtol * (ref.abs() + row_rms)).all())
    return ok, float(err.max())
