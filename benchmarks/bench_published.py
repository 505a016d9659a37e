"""Published serving results against the planner (issue 13): how far is a datasheet plan?

    python benchmarks/bench_published.py                 # the table, derated and --no-derate
    python benchmarks/bench_published.py --rows          # and every row's prediction
    python -m pytest benchmarks/bench_published.py --benchmark-only -s

Each row of benchmarks/published/serving.csv is one measured result copied from a public
source (TensorRT-LLM's performance docs, gpt-fast's README, vLLM's nightly benchmark),
with its URL and the table it came from. The planner predicts the same quantity through
the public API (ridgeline.api) on the GPU's datasheet (`api.load_gpu(gpu, derate=...)`:
no profile, so derated by the published achievable fractions, or at 100% with
derate=False). Which planner output answers which metric (docs/validation.md, "Published
serving results"):

    metric                        planner call                                  output
    tokens_per_s                  api.static_batch(batch, input_len, output_len) tokens_per_s
    output_tokens_per_s_per_gpu   api.static_batch(...)                         tokens_per_s_per_gpu
    latency_ms                    api.static_batch(...)                         latency_s x 1e3
    ttft_ms                       api.prefill(input_tokens=input_len, batch,     (time_s + the
                                  serving_engine)                               preset's request
                                                                                overhead) x 1e3
    output_tokens_per_s           api.simulate(closed loop: `requests` clients,  output_tokens_per_s
                                  one request each, all at t = 0; serving_engine)

Every call forces the row's TP and precision: weights, GEMM activations, KV cache and,
for int4 weights only:

    column            PrecisionOptions field   meaning (empty = the planner's default)
    int4_group        int4_group_size          int4 weights per fp16 scale (128)
    int4_zero_point   int4_zero_point          zero point per group: none (default), int4
                                               (0.5 B, AWQ/GPTQ qzeros), fp16/bf16 (2 B,
                                               gpt-fast's scales_and_zeros)

A row whose `engine` has a preset in ridgeline/data/engines.json (vllm, sglang, trtllm)
passes it as `serving_engine` to every call (prefill, static_batch and simulate: its sourced
overheads and all-reduce); gpt-fast has no preset: its rows run on the hardware alone
(`serving_engine_for`). Per row and per category:

    error      = |predicted - measured| / measured
    optimistic = predicted faster than measured (a rate above, a time below the measurement)

and per category the median and worst error and the share of optimistic rows. A row the
planner refuses (it does not fit, say) is reported with its reason and left out of the
statistics.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

try:  # the script runs without pytest; the benchmark tests need it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

DATA = Path(__file__).resolve().parent / "published" / "serving.csv"
COLUMNS = ("id", "category", "model", "gpu", "weights", "activations", "kv", "int4_group",
           "int4_zero_point", "tp", "engine", "batch", "concurrency", "requests", "input_len",
           "output_len", "max_num_seqs", "metric", "value", "source_url", "source_where", "note")
RATES = ("tokens_per_s", "output_tokens_per_s_per_gpu", "output_tokens_per_s")
TIMES = ("latency_ms", "ttft_ms")
METRICS = RATES + TIMES


@dataclass(frozen=True)
class Row:
    """One published measurement and the workload it was measured on."""

    id: str
    category: str
    model: str
    gpu: str
    weights: str
    activations: str
    kv: str
    int4_group: int | None      # int4 weights per fp16 scale; None: the planner's default
    int4_zero_point: str | None  # none, int4, fp16 (bf16); None: the planner's default
    tp: int
    engine: str
    batch: int | None
    concurrency: int | None
    requests: int | None
    input_len: int
    output_len: int
    max_num_seqs: int | None
    metric: str
    value: float
    source_url: str
    source_where: str
    note: str = ""


def _int(text: str, where: str) -> int | None:
    if text.strip() == "":
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"{where} must be >= 1, got {value}")
    return value


def _planner_weights(weights: str) -> str:
    """The planner's name of a weight dtype ("gptq" -> "int4"); as written when unknown."""
    from ridgeline.dtypes import find, planner_name

    return planner_name(weights) if find(weights) else weights.strip().lower()


def _zero_point(name: str) -> str:
    """The planner's name of an int4 zero point; ValueError (its one line) when unknown."""
    from ridgeline.errors import RidgelineError
    from ridgeline.sizing.precision import normalize_zero_point

    try:
        return normalize_zero_point(name)
    except RidgelineError as exc:
        raise ValueError(str(exc)) from None


def parse_row(d: dict[str, str]) -> Row:
    """A Row from one CSV record; ValueError naming the row and field when it is malformed."""
    rid = d.get("id") or "?"
    try:
        missing = [c for c in COLUMNS if c not in d]
        if missing:
            raise ValueError(f"missing columns {missing}")
        for c in ("id", "category", "model", "gpu", "weights", "metric", "source_url",
                  "source_where"):
            if not d[c].strip():
                raise ValueError(f"{c} is empty")
        if not d["source_url"].startswith(("https://", "http://")):
            raise ValueError(f"source_url is not a URL: {d['source_url']!r}")
        if d["metric"] not in METRICS:
            raise ValueError(f"metric {d['metric']!r} is not one of {METRICS}")
        value = float(d["value"])
        if not value > 0:
            raise ValueError(f"value must be positive, got {value}")
        ints = {c: _int(d[c], c) for c in ("int4_group", "tp", "batch", "concurrency",
                                            "requests", "input_len", "output_len",
                                            "max_num_seqs")}
        zero = d["int4_zero_point"].strip().lower() or None
        for c, v in (("int4_group", ints["int4_group"]), ("int4_zero_point", zero)):
            if v is not None and _planner_weights(d["weights"]) != "int4":
                raise ValueError(f"{c} applies to int4 weights only, got weights "
                                 f"{d['weights']!r}")
        if zero is not None:
            zero = _zero_point(zero)   # "bf16" -> "fp16"
        for c in ("tp", "input_len", "output_len"):
            if ints[c] is None:
                raise ValueError(f"{c} is empty")
        if d["metric"] == "output_tokens_per_s" and ints["requests"] is None:
            raise ValueError("a throughput row needs its request count")
        if d["metric"] != "output_tokens_per_s" and ints["batch"] is None:
            raise ValueError("a latency or static-batch row needs its batch")
        return Row(d["id"], d["category"], d["model"], d["gpu"], d["weights"],
                   d["activations"] or "auto", d["kv"] or "auto", ints["int4_group"], zero,
                   ints["tp"], d["engine"], ints["batch"], ints["concurrency"],
                   ints["requests"], ints["input_len"], ints["output_len"],
                   ints["max_num_seqs"], d["metric"], value, d["source_url"],
                   d["source_where"], d["note"])
    except ValueError as exc:
        raise ValueError(f"row {rid}: {exc}") from None


def load_rows(path: Path | str = DATA) -> list[Row]:
    with open(path, newline="") as fh:
        rows = [parse_row(d) for d in csv.DictReader(fh)]
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids")
    return rows


# -- predicting a row ------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _gpu(name: str, derate: bool):
    from ridgeline import api

    return api.load_gpu(name, derate=derate)


@lru_cache(maxsize=None)
def serving_engine_for(engine: str) -> str | None:
    """The engine-layer preset of a row's engine (vllm, sglang, trtllm), None without one."""
    from ridgeline.sizing.engine import preset_names

    return engine if engine in preset_names() and engine != "none" else None


def precision_for(row: Row):
    """The row's precision as the API takes it (an empty int4 column: the planner's default)."""
    from ridgeline import api

    int4 = {k: v for k, v in (("int4_group_size", row.int4_group),
                              ("int4_zero_point", row.int4_zero_point)) if v is not None}
    return api.PrecisionOptions(weights=row.weights, activations=row.activations, kv=row.kv,
                                **int4)


def predict(row: Row, derate: bool = True) -> float:
    """The planner's value of the row's metric, on the GPU's datasheet (see the docstring)."""
    from ridgeline import api

    gpu = _gpu(row.gpu, derate)
    precision = precision_for(row)
    layer = serving_engine_for(row.engine)
    if row.metric == "ttft_ms":
        step = api.prefill(row.model, gpu, input_tokens=row.input_len, batch=row.batch,
                           precision=precision, tp=row.tp, serving_engine=layer)
        # a lone request's TTFT: the engine's per-request overhead on top of the pass
        request_s = api.load_engine(layer).request_overhead_s if layer else 0.0
        return (step.time_s + request_s) * 1e3
    if row.metric == "output_tokens_per_s":
        engine = api.EngineConfig(max_num_seqs=row.max_num_seqs or
                                  api.EngineConfig.max_num_seqs)
        lengths = api.LengthOptions(input_p95=row.input_len, input_p50=row.input_len,
                                    output_p95=row.output_len, output_p50=row.output_len)
        n = row.requests
        sim = api.simulate(row.model, gpu, lengths, precision=precision, tp=row.tp,
                           engine=engine, serving_engine=layer,
                           load=api.LoadOptions(concurrency=(row.concurrency or n,), requests=n))
        return float(sim.detail["points"][0]["output_tokens_per_s"])
    run = api.static_batch(row.model, gpu, batch=row.batch, input_len=row.input_len,
                           output_len=row.output_len, precision=precision,
                           parallel=api.ParallelOptions(tp=row.tp), serving_engine=layer)
    return {"tokens_per_s": run.tokens_per_s,
            "output_tokens_per_s_per_gpu": run.tokens_per_s_per_gpu,
            "latency_ms": run.latency_s * 1e3}[row.metric]


# -- scoring ---------------------------------------------------------------------------------

@dataclass
class Scored:
    row: Row
    predicted: float | None
    error: float | None          # |predicted - measured| / measured
    optimistic: bool | None      # predicted faster than measured
    failure: str | None = None   # why the planner gave no prediction


def score_row(row: Row, predicted: float) -> Scored:
    """Relative error and direction of one prediction."""
    error = abs(predicted - row.value) / row.value
    faster = predicted > row.value if row.metric in RATES else predicted < row.value
    return Scored(row, predicted, error, faster)


def score(rows: Iterable[Row], predictor: Callable[[Row], float]) -> list[Scored]:
    from ridgeline.errors import RidgelineError

    out = []
    for row in rows:
        try:
            out.append(score_row(row, predictor(row)))
        except RidgelineError as exc:
            out.append(Scored(row, None, None, None, str(exc)))
    return out


@dataclass
class Summary:
    rows: int
    failed: int
    median_error: float | None
    worst_error: float | None
    optimistic_share: float | None
    worst_id: str | None = None
    failures: list[str] = field(default_factory=list)


def summarize(scored: list[Scored]) -> dict[str, Summary]:
    """Per category (in the order they first appear), then "all"."""
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        groups.setdefault(s.row.category, []).append(s)
    groups["all"] = list(scored)
    out = {}
    for name, items in groups.items():
        ok = [s for s in items if s.error is not None]
        worst = max(ok, key=lambda s: s.error) if ok else None
        out[name] = Summary(
            len(items), len(items) - len(ok),
            statistics.median(s.error for s in ok) if ok else None,
            worst.error if worst else None,
            sum(bool(s.optimistic) for s in ok) / len(ok) if ok else None,
            worst.row.id if worst else None,
            [f"{s.row.id}: {s.failure}" for s in items if s.failure])
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def table(summaries: dict[str, dict[str, Summary]]) -> str:
    """One line per category: rows, then median / worst / optimistic share per setting."""
    settings = list(summaries)
    cats = list(next(iter(summaries.values())))
    head = f"{'category':<16}{'rows':>5}" + "".join(
        f" | {s + ': median':>17} {'worst':>6} {'optim.':>6}" for s in settings)
    lines = [head, "-" * len(head)]
    for c in cats:
        first = summaries[settings[0]][c]
        n = f"{first.rows}" + (f"-{first.failed}" if first.failed else "")
        line = f"{c:<16}{n:>5}"
        for s in settings:
            m = summaries[s][c]
            line += (f" | {_pct(m.median_error):>17} {_pct(m.worst_error):>6} "
                     f"{_pct(m.optimistic_share):>6}")
        lines.append(line)
    return "\n".join(lines)


def row_table(scored: dict[str, list[Scored]]) -> str:
    settings = list(scored)
    lines = [f"{'id':<16}{'metric':<28}{'measured':>10}" + "".join(
        f"{s:>12}{'err':>6}" for s in settings)]
    for i, s0 in enumerate(scored[settings[0]]):
        line = f"{s0.row.id:<16}{s0.row.metric:<28}{s0.row.value:>10,.4g}"
        for s in settings:
            x = scored[s][i]
            line += ("   (refused)      " if x.predicted is None else
                     f"{x.predicted:>12,.4g}{_pct(x.error):>6}")
        lines.append(line)
    return "\n".join(lines)


def run_all(rows: list[Row]) -> dict[str, list[Scored]]:
    return {"derated": score(rows, lambda r: predict(r, derate=True)),
            "100% sheet": score(rows, lambda r: predict(r, derate=False))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default=str(DATA), help="published results (default: %(default)s)")
    ap.add_argument("--rows", action="store_true", help="also print every row's prediction")
    args = ap.parse_args(argv)
    rows = load_rows(args.csv)
    t0 = time.perf_counter()
    scored = run_all(rows)
    summaries = {k: summarize(v) for k, v in scored.items()}
    print(f"{len(rows)} published results ({args.csv}), planner on the GPU datasheet "
          f"(error = |predicted - measured| / measured; optim. = share predicted faster "
          f"than measured; rows-N: N refused), {time.perf_counter() - t0:.0f} s\n")
    print(table(summaries))
    for name, s in summaries.items():
        for f in s["all"].failures:
            print(f"refused ({name}): {f}")
    if args.rows:
        print()
        print(row_table(scored))
    return 0


# -- pytest-benchmark ------------------------------------------------------------------------

if pytest is not None:
    pytestmark = pytest.mark.benchmark

    @pytest.mark.parametrize("derate", [True, False], ids=["derated", "sheet-100pct"])
    def test_published_serving_results(benchmark, derate):
        rows = load_rows()
        scored = benchmark.pedantic(lambda: score(rows, lambda r: predict(r, derate=derate)),
                                    rounds=1, iterations=1)
        summary = summarize(scored)
        benchmark.extra_info.update({c: vars(s) for c, s in summary.items()})
        print("\n" + table({"derated" if derate else "100% sheet": summary}))
        assert len(scored) == len(rows)
        # the planner may refuse a row only for capacity (A100 FP16 static batch 60 x 2,176
        # tokens: TensorRT-LLM used more than the planner's 90% memory fraction), never crash
        assert all("does not fit" in s.failure for s in scored if s.failure)
        assert summary["all"].failed <= 1


if __name__ == "__main__":
    sys.exit(main())
