"""The offered load: request lengths (lognormal fit or trace) and arrivals (open or closed loop).

    lengths = LognormalLengths(input_p50=1000, input_p95=4000, output_p50=200, output_p95=512)
    reqs = make_requests(lengths, n=100_000, seed=0)          # or read_trace("azure_code.csv")
    OpenLoop(rps=12.0, arrival_cv=1.0)     # Poisson at 12 requests/s
    ClosedLoop(concurrency=64)             # 64 clients, each sends when its last one ends

Lengths from percentiles: a lognormal, ln L ~ N(mu, sigma^2), with mu = ln p50 and sigma
the least-squares fit of ln q_p = mu + sigma z_p over the given percentiles (p95, and p99
when given; z95 = 1.645, z99 = 2.326), so p50 and p95 alone are matched exactly. Samples
are rounded to whole tokens, at least 1, at most `max_*` when given. p50 = p95 means a
fixed length. Heavy-tailed real prompts are roughly lognormal (field guide §1.1, §8.2).

Open-loop arrivals: inter-arrival gaps are gamma distributed with mean 1 / rps and
coefficient of variation `arrival_cv` (shape k = 1 / cv^2): cv = 1 is Poisson, cv > 1
bursty (clumps of arrivals, then lulls), cv = 0 evenly spaced. `vllm bench serve
--burstiness b` is the same family with b = k = 1 / cv^2. The first request arrives at
t = 0. A trace with arrival times replays its own gaps instead, rescaled to `rps` when
given (the burst structure of the trace is kept, only the time axis is stretched).

Random numbers: lengths and unit-mean gaps come from two streams of `seed`, so the
points of a sweep see the same requests and the same arrival pattern, only scaled in
time (common random numbers: curves are smooth and comparable point to point).

Traces: CSV or JSONL (or a JSON list) with an input-length and an output-length column
and an optional arrival time, the shape of public traces: Azure LLM inference traces
(`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps as dates), ShareGPT-derived length
sets, `vllm bench` custom datasets. Accepted column names (case-insensitive) are listed
in INPUT_COLUMNS, OUTPUT_COLUMNS and TIME_COLUMNS; times are seconds or ISO dates.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np

from ridgeline.errors import RidgelineError

Z95 = 1.6448536269514722
Z99 = 2.3263478740408408
INPUT_COLUMNS = ("contexttokens", "input_tokens", "input_len", "input_length", "prompt_tokens",
                 "prompt_len", "prompt_length", "num_prompt_tokens", "isl", "input")
OUTPUT_COLUMNS = ("generatedtokens", "output_tokens", "output_len", "output_length",
                  "completion_tokens", "generated_tokens", "num_output_tokens", "osl", "output")
TIME_COLUMNS = ("timestamp", "arrival_time", "arrival_s", "arrival_time_s", "timestamp_s",
                "time_s", "time")


@dataclass(frozen=True)
class LognormalLengths:
    """Input and output lengths (tokens) fitted to percentiles; see the module docstring."""

    input_p50: int
    input_p95: int
    output_p50: int
    output_p95: int
    input_p99: int | None = None
    output_p99: int | None = None
    max_input: int | None = None
    max_output: int | None = None

    def __post_init__(self) -> None:
        for what in ("input", "output"):
            p50, p95, p99 = (getattr(self, f"{what}_p{q}") for q in (50, 95, 99))
            if not (isinstance(p50, int) and isinstance(p95, int) and 1 <= p50 <= p95):
                raise RidgelineError(f"{what} lengths need whole numbers 1 <= p50 <= p95, got "
                                     f"p50={p50}, p95={p95}")
            if p99 is not None and p99 < p95:
                raise RidgelineError(f"{what} p99 ({p99}) is below its p95 ({p95})")

    @staticmethod
    def fit(p50: float, p95: float, p99: float | None = None) -> tuple[float, float]:
        """(mu, sigma) of ln L: mu = ln p50, sigma by least squares over p95 (and p99)."""
        mu = math.log(p50)
        pts = [(Z95, math.log(p95))] + ([(Z99, math.log(p99))] if p99 else [])
        sigma = sum(z * (y - mu) for z, y in pts) / sum(z * z for z, _ in pts)
        return mu, max(0.0, sigma)

    def _draw(self, rng: np.random.Generator, n: int, p50: int, p95: int, p99: int | None,
              cap: int | None) -> np.ndarray:
        mu, sigma = self.fit(p50, p95, p99)
        x = np.rint(np.exp(mu + sigma * rng.standard_normal(n)))
        return np.clip(x, 1, cap or np.inf).astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inp = self._draw(rng, n, self.input_p50, self.input_p95, self.input_p99, self.max_input)
        out = self._draw(rng, n, self.output_p50, self.output_p95, self.output_p99,
                         self.max_output)
        return inp, out


@dataclass(frozen=True)
class Trace:
    """Lengths (and arrival times, seconds from the first, when recorded) read from a file."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None = None
    source: str = ""

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The first n rows in order (cycled when the trace is shorter): a trace is replayed,
        not resampled, so its order and its bursts survive."""
        idx = np.arange(n) % len(self.input_tokens)
        return self.input_tokens[idx].copy(), self.output_tokens[idx].copy()


LengthSource = Union[LognormalLengths, Trace]


@dataclass(frozen=True)
class OpenLoop:
    """Requests arrive at `rps` per second whatever the engine does (gamma gaps, CV `arrival_cv`;
    a trace's own gaps, rescaled to `rps`, when it has times; rps None replays them as is)."""

    rps: float | None             # None: a trace's own arrival times, unscaled
    arrival_cv: float = 1.0

    def __post_init__(self) -> None:
        if self.rps is not None and not (math.isfinite(self.rps) and self.rps > 0):
            raise RidgelineError(f"the request rate must be > 0, got {self.rps}")
        if not (math.isfinite(self.arrival_cv) and self.arrival_cv >= 0):
            raise RidgelineError(f"the arrival CV must be >= 0, got {self.arrival_cv}")

    @property
    def key(self) -> tuple[str, float]:
        return "rps", self.rps


@dataclass(frozen=True)
class ClosedLoop:
    """`concurrency` clients; each sends its next request `think_s` after its last one ends."""

    concurrency: int
    think_s: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) \
                or self.concurrency < 1:
            raise RidgelineError(f"concurrency must be a whole number >= 1, got "
                                 f"{self.concurrency!r}")
        if not (math.isfinite(self.think_s) and self.think_s >= 0):
            raise RidgelineError(f"think time must be >= 0 s, got {self.think_s}")

    @property
    def key(self) -> tuple[str, float]:
        return "concurrency", self.concurrency


Load = Union[OpenLoop, ClosedLoop]


def round_robin_replica_load(fleet: OpenLoop, replicas: int) -> OpenLoop:
    """The load one of `replicas` identical replicas sees when a router deals the fleet's
    requests round robin: every N-th arrival. The sum of N gamma gaps of shape k is a gamma
    gap of shape N k, so the replica's arrivals are gamma again, at rps / N with CV / sqrt(N)
    (Poisson fleet traffic reaches each replica as Erlang-N: smoother). Exact for this
    router; least-loaded routing would smooth further and is not modelled."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise RidgelineError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if fleet.rps is None:
        raise RidgelineError("round-robin splitting needs a fleet request rate")
    return OpenLoop(fleet.rps / replicas, fleet.arrival_cv / math.sqrt(replicas))


@dataclass(frozen=True)
class Requests:
    """n requests: lengths, and unit-mean arrival gaps (trace gaps when replaying a trace)."""

    input_tokens: np.ndarray          # (n,) int
    output_tokens: np.ndarray         # (n,) int
    trace_gaps_s: np.ndarray | None   # (n,) seconds before each request (first 0), or None
    seed: int

    def __len__(self) -> int:
        return len(self.input_tokens)

    def arrivals_s(self, load: OpenLoop) -> np.ndarray:
        """Arrival times of an open loop: trace gaps rescaled to the rate, else gamma gaps."""
        n = len(self)
        if self.trace_gaps_s is not None:
            gaps = self.trace_gaps_s
            total = gaps.sum()
            scale = (n - 1) / (load.rps * total) if total > 0 and load.rps else 1.0
            return np.cumsum(gaps) * scale
        if load.rps is None:
            raise RidgelineError("replaying arrival times needs a trace that records them")
        rng = np.random.default_rng([self.seed, 1])
        if load.arrival_cv == 0:
            unit = np.ones(n)
        else:
            k = 1.0 / load.arrival_cv ** 2
            unit = rng.gamma(k, 1.0 / k, n)  # mean 1, CV arrival_cv
        unit[0] = 0.0
        return np.cumsum(unit) / load.rps


def make_requests(source: LengthSource, n: int, seed: int = 0,
                  replay_arrivals: bool = True) -> Requests:
    """n requests from a length source; a trace with times replays its gaps when asked."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RidgelineError(f"the number of requests must be a whole number >= 1, got {n!r}")
    inp, out = source.sample(n, np.random.default_rng([seed, 0]))
    gaps = None
    if replay_arrivals and isinstance(source, Trace) and source.arrival_s is not None:
        t = source.arrival_s
        d = np.diff(t, prepend=t[0])                       # d[0] = 0
        gaps = d[np.arange(n) % len(d)].astype(np.float64)
        # cycling a short trace: the gap before each repeat is the trace's mean gap
        gaps[len(d)::len(d)] = (t[-1] - t[0]) / max(1, len(t) - 1)
        gaps[0] = 0.0
    return Requests(inp, out, gaps, seed)


# -- traces ------------------------------------------------------------------------------------

def _pick(names: Iterable[str], wanted: tuple[str, ...]) -> str | None:
    lower = {n.strip().lower(): n for n in names}
    for w in wanted:
        if w in lower:
            return lower[w]
    return None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:  # Azure traces: "2023-11-16 18:15:46.6805900" (7 fraction digits: keep 6)
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00"))) \
            .timestamp()
    except ValueError:
        raise RidgelineError(f"{where}: arrival time {text!r} is neither seconds nor an ISO "
                             "date") from None


def _rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")  # a BOM would hide the first column name
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix not in (".jsonl", ".json", ".ndjson")
                            and not text.lstrip().startswith(("{", "["))):
        return list(csv.DictReader(text.splitlines()))
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(stripped)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in rows):
        raise RidgelineError(f"{path}: every record must be an object with length fields")
    return rows


def read_trace(path: str | Path) -> Trace:
    """A trace from CSV / JSONL / JSON; RidgelineError naming what is missing or wrong."""
    path = Path(path)
    try:
        rows = _rows(path)
    except FileNotFoundError:
        raise RidgelineError(f"trace file not found: {path}") from None
    except (OSError, json.JSONDecodeError, csv.Error) as exc:
        raise RidgelineError(f"cannot read trace {path}: {exc}") from None
    if not rows:
        raise RidgelineError(f"{path}: the trace has no requests")
    names = rows[0].keys()
    icol, ocol, tcol = (_pick(names, w) for w in (INPUT_COLUMNS, OUTPUT_COLUMNS, TIME_COLUMNS))
    if icol is None or ocol is None:
        raise RidgelineError(f"{path}: no {'input' if icol is None else 'output'}-length column "
                             f"(have {', '.join(names)}; accepted: "
                             f"{', '.join(INPUT_COLUMNS if icol is None else OUTPUT_COLUMNS)})")
    inp, out, times = [], [], []
    for i, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        where = f"{path} record {i}"
        try:
            a, b = int(float(row[icol])), int(float(row[ocol]))
        except (TypeError, ValueError, KeyError):
            raise RidgelineError(f"{where}: lengths {row.get(icol)!r}, {row.get(ocol)!r} are not "
                                 "whole numbers") from None
        if a < 1 or b < 1:  # a request with no prompt or no output is not served
            raise RidgelineError(f"{where}: input and output lengths must be >= 1, got {a}, {b}")
        inp.append(a)
        out.append(b)
        if tcol is not None:
            times.append(_seconds(row.get(tcol), where))
    arrival = None
    order = None
    if tcol is not None:
        t = np.asarray(times, dtype=np.float64)
        order = np.argsort(t, kind="stable")
        arrival = t[order] - t[order][0]
    i_arr, o_arr = np.asarray(inp, dtype=np.int64), np.asarray(out, dtype=np.int64)
    if order is not None:
        i_arr, o_arr = i_arr[order], o_arr[order]
    return Trace(i_arr, o_arr, arrival, str(path))
