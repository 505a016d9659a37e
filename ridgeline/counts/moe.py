"""Work counts of grouped expert GEMMs: `experts` experts each multiplying its `tokens` routed rows
(tokens, K) by its weight (K, N); pure functions tested to the byte (tests/test_probes_moe.py).
The moe probe times the kernel with them; the planner's published efficiencies count their
sources' shapes with them (ridgeline.published_efficiency), so neither imports the other.

    flops = 2 E t K N;  read = E K N w + E t K a (+ fp8 scales);  written = E t N o
"""

from __future__ import annotations

from ridgeline.dtypes import bytes_per_element, is_fp8

OUT_DTYPE = "bf16"   # the expert GEMMs' output dtype


def weight_bytes(experts: int, k: int, n: int, dtype: str) -> int:
    return experts * k * n * bytes_per_element(dtype)


def scale_bytes(experts: int, tokens: int, n: int, dtype: str, scale_kind: str = "rowwise") -> int:
    """fp32 scales of W8A8: per token and per output channel (rowwise), or one per tensor."""
    if not is_fp8(dtype):
        return 0
    if scale_kind == "tensorwise":
        return experts * 2 * 4
    return experts * tokens * 4 + experts * n * 4


def bytes_read(experts: int, tokens: int, k: int, n: int, dtype: str,
               scale_kind: str = "rowwise") -> int:
    """Every expert's weight once + its routed token rows (+ fp8 scales)."""
    return (weight_bytes(experts, k, n, dtype) + experts * tokens * k * bytes_per_element(dtype)
            + scale_bytes(experts, tokens, n, dtype, scale_kind))


def bytes_written(experts: int, tokens: int, n: int, out_dtype: str = OUT_DTYPE) -> int:
    return experts * tokens * n * bytes_per_element(out_dtype)


def flops(experts: int, tokens: int, k: int, n: int) -> int:
    return 2 * experts * tokens * k * n


def expected_experts_loaded(num_experts: int, experts_per_token: int, tokens: float) -> float:
    """Expected distinct experts hit by `tokens` tokens routing to k of N uniformly (§5.4).

    N (1 - (1 - k/N)^B): each expert is missed by one token with probability 1 - k/N.
    """
    if num_experts <= 0 or tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** tokens)
