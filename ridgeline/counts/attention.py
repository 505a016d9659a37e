"""Work counts of decode and prefill attention (GQA: q_heads query heads over kv_heads KV heads),
pure functions tested to the byte (tests/test_probes_attention.py). The attention probe times
these kernels with them; the planner's published efficiencies count their sources' shapes
with them (ridgeline.published_efficiency), so neither imports the other. b = bytes per element.

    decode  flops = 4 B c Hq d; read = K and V of B x c tokens + q; written = B Hq d b
    prefill flops = 4 B Hq d s (s + 1) / 2 (causal); read = B s (2 Hkv + Hq) d b
"""

from __future__ import annotations

from ridgeline.dtypes import bytes_per_element


def kv_cache_bytes(batch: int, context: int, kv_heads: int, head_dim: int, dtype: str) -> int:
    """K and V of `context` tokens of `batch` sequences."""
    return batch * context * 2 * kv_heads * head_dim * bytes_per_element(dtype)


def decode_flops(batch: int, context: int, q_heads: int, head_dim: int) -> int:
    return 4 * batch * context * q_heads * head_dim


def decode_bytes_read(batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int,
                      dtype: str) -> int:
    return (kv_cache_bytes(batch, context, kv_heads, head_dim, dtype)
            + batch * q_heads * head_dim * bytes_per_element(dtype))


def decode_bytes_written(batch: int, q_heads: int, head_dim: int, dtype: str) -> int:
    return batch * q_heads * head_dim * bytes_per_element(dtype)


def prefill_flops(batch: int, tokens: int, q_heads: int, head_dim: int) -> int:
    """4 * batch * q_heads * head_dim * tokens * (tokens + 1) / 2, in integers (causal)."""
    return 2 * batch * q_heads * head_dim * tokens * (tokens + 1)


def prefill_bytes_read(batch: int, tokens: int, q_heads: int, kv_heads: int, head_dim: int,
                       dtype: str) -> int:
    return batch * tokens * (2 * kv_heads + q_heads) * head_dim * bytes_per_element(dtype)


def prefill_bytes_written(batch: int, tokens: int, q_heads: int, head_dim: int,
                          dtype: str) -> int:
    return batch * tokens * q_heads * head_dim * bytes_per_element(dtype)


def work(kernel: str, batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int,
         dtype: str) -> tuple[int, int, int]:
    """(flops, bytes_read, bytes_written) of one case; prefill's `context` is its tokens."""
    if kernel == "decode":
        return (decode_flops(batch, context, q_heads, head_dim),
                decode_bytes_read(batch, context, q_heads, kv_heads, head_dim, dtype),
                decode_bytes_written(batch, q_heads, head_dim, dtype))
    if kernel == "prefill":
        return (prefill_flops(batch, context, q_heads, head_dim),
                prefill_bytes_read(batch, context, q_heads, kv_heads, head_dim, dtype),
                prefill_bytes_written(batch, context, q_heads, head_dim, dtype))
    raise ValueError(f"attention: unknown kernel {kernel!r}; known: decode, prefill")
