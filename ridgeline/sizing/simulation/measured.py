"""Measured latency-throughput points from real serving benchmarks, beside the simulated curve.

    curves = read_measured(["vllm-8qps.json", "vllm-16qps.json", "aiperf-artifacts/"])
    curves[0].label, [p.value for p in curves[0].points]     # "measured (vLLM)", sorted loads
    curves[0].to_dict()["points"][0]["ttft_s"]                # {"mean", "p50", "p95", "p99"}

Each point has the shape of a simulated one (`SimPoint.to_dict()`): `rps` or `concurrency`,
`ttft_s`, `itl_s`, `e2e_s`, `tpot_s` as {"mean", "p50", "p95", "p99"} in seconds, the
throughputs, plus `tool`, `source` (the file) and `missing` (the statistics the file does
not hold). A statistic the file lacks is None, never estimated; `missing` says which.

vLLM, `vllm bench serve --save-result` (vllm/benchmarks/serve.py, `main_async` and
`benchmark`): one JSON object per run, or several on separate lines (`--append-result`).
    load     `request_rate` (a number, or "inf") and `max_concurrency` (null when unset):
             a finite rate is an open loop (`rps`; `burstiness` b gives arrival CV 1/sqrt(b));
             "inf" with a max concurrency is a closed loop of that many clients (vLLM's
             semaphore: each slot sends its next request when the last one ends);
             "inf" without one, or a ramp-up (`ramp_up_strategy`), has no single load: refused
    latency  `mean_<m>_ms`, `median_<m>_ms` (P50), `p<q>_<m>_ms` for the `--metric-percentiles`
             asked (default 99 only) with m = ttft, itl, e2el, tpot; ITL pools every gap
             between two chunks of every request, as the simulation does
    detail   `--save-detailed` adds per-request `ttfts`, `itls` (seconds; a list per request),
             `output_lens`, `errors` ("" when it succeeded); recent versions always keep
             `latencies` (seconds). A statistic the summary lacks is computed from these lists
             (numpy's linear percentile, as vLLM computes its own; TPOT as vLLM defines it,
             (latency - TTFT) / (output - 1)), over the successful requests only
    rates    `request_throughput`, `output_throughput`, `total_token_throughput`, `completed`,
             `duration` (s); mean concurrency = sum(latencies) / duration when the latencies
             are there (requests in flight at the server; a client-side queue is not counted)

AIPerf (ai-dynamo/aiperf, `JsonExportData` in common/models/export_models.py; the CSV of
exporters/csv_exporter.py):
    profile_export_aiperf.json   one object per run; each metric a block {"unit", "avg",
             "p1" ... "p99", "min", "max", "std"(, "count", "sum")}: `time_to_first_token`,
             `request_latency`, `inter_chunk_latency` (every gap between two streamed chunks,
             pooled: the ITL above), `inter_token_latency` (per request (latency - TTFT) /
             (OSL - 1): that is TPOT, so it is read as `tpot_s`, not `itl_s`),
             `request_throughput`, `output_token_throughput` ("tokens/sec"), `request_count`,
             `benchmark_duration`, `total_isl`, `total_osl`. The load comes from
             `input_config.loadgen` (`request_rate`, `concurrency`, `request_rate_mode`) or, in
             newer exports, `input_config.phases.profiling`; a request rate wins over a
             concurrency (AIPerf's own rule: the concurrency then only caps it).
    profile_export_aiperf.csv    a "Metric,avg,min,max,p1,...,p99,std" section of
             "Name (unit)" rows, a blank line, then "Metric,Value" rows. It holds no load: that
             comes from a profile_export_aiperf.json beside it, else from AIPerf's artifact
             folder name (`...-concurrency8`, `...-request_rate10.0`).
Units are each block's own (`ns`, `us`, `ms`, `sec`); everything is converted to seconds.

A folder is searched for profile_export_aiperf.json (or .csv where no JSON sits beside it)
below it, else its *.json files are read as vLLM results. Points of one tool are sorted by
load and must all be open loop or all closed loop. A file that cannot be read is one line
(RidgelineError) naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np

from ridgeline.errors import RidgelineError

STATS = ("mean", "p50", "p95", "p99")
LATENCIES = ("ttft_s", "itl_s", "e2e_s", "tpot_s")
VLLM, AIPERF = "vLLM", "AIPerf"
AIPERF_JSON, AIPERF_CSV = "profile_export_aiperf.json", "profile_export_aiperf.csv"
SECONDS_PER = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0}
PathLike = Union[str, Path]


@dataclass(frozen=True)
class MeasuredStat:
    """Mean and percentiles of one latency (seconds); None where the benchmark gave none."""

    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    def get(self, stat: str) -> float | None:
        return getattr(self, stat)

    def missing(self) -> list[str]:
        return [s for s in STATS if getattr(self, s) is None]

    def to_dict(self) -> dict[str, float | None]:
        return {s: getattr(self, s) for s in STATS}


@dataclass
class MeasuredPoint:
    """One benchmark run: the same fields as a simulated point where the file has them."""

    tool: str                        # "vLLM" | "AIPerf"
    source: str                      # the file it came from
    load: str                        # "rps" | "concurrency"
    value: float
    ttft_s: MeasuredStat
    itl_s: MeasuredStat
    e2e_s: MeasuredStat
    tpot_s: MeasuredStat
    request_throughput: float | None = None       # requests/s
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None
    mean_concurrency: float | None = None
    requests: int | None = None
    duration_s: float | None = None
    arrival_cv: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """"ttft_s.p95", ...: the latency statistics the file does not hold."""
        return [f"{name}.{s}" for name in LATENCIES for s in getattr(self, name).missing()]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {self.load: self.value}
        if self.arrival_cv is not None:
            d["arrival_cv"] = self.arrival_cv
        d.update(requests=self.requests, duration_s=self.duration_s,
                 **{name: getattr(self, name).to_dict() for name in LATENCIES},
                 request_throughput=self.request_throughput,
                 output_tokens_per_s=self.output_tokens_per_s,
                 total_tokens_per_s=self.total_tokens_per_s,
                 mean_concurrency=self.mean_concurrency, tool=self.tool, source=self.source,
                 missing=self.missing, notes=list(self.notes))
        return d


@dataclass
class MeasuredCurve:
    """The points one benchmark tool measured, in increasing load."""

    tool: str
    points: list[MeasuredPoint]

    @property
    def label(self) -> str:
        return f"measured ({self.tool})"

    @property
    def load(self) -> str:
        return self.points[0].load

    def missing_summary(self) -> str:
        """'not in the vLLM results: at 8 req/s TTFT P95, ITL P95; at 32 req/s E2E' or ''."""
        unit = "req/s" if self.load == "rps" else "clients"
        parts = []
        for p in self.points:
            gone = []
            for name in LATENCIES:
                stats = getattr(p, name).missing()
                metric = name[:-2].upper()
                if len(stats) == len(STATS):
                    gone.append(metric)
                elif stats:
                    named = (s.upper() if s != "mean" else s for s in stats)
                    gone.append(f"{metric} {', '.join(named)}")
            if gone:
                parts.append(f"at {p.value:g} {unit} {'; '.join(gone)}")
        if not parts:
            return ""
        hint = (" (vllm bench serve keeps P50 and P99 by default: add --metric-percentiles "
                "50,95,99 --percentile-metrics ttft,tpot,itl,e2el, or --save-detailed)"
                if self.tool == VLLM else "")
        return f"not in the {self.tool} results: {' / '.join(parts)}{hint}"

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "label": self.label, "load": self.load,
                "points": [p.to_dict() for p in self.points], "missing": self.missing_summary()}


# ------------------------------------------------------------------------------ entry point

def read_measured(paths: PathLike | Sequence[PathLike]) -> list[MeasuredCurve]:
    """Every benchmark result under `paths` (files or folders), one curve per tool."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    points: list[MeasuredPoint] = []
    for path in _expand(Path(p) for p in paths):
        points += read_file(path)
    curves: list[MeasuredCurve] = []
    for tool in dict.fromkeys(p.tool for p in points):  # tools in the order first seen
        mine = sorted((p for p in points if p.tool == tool), key=lambda p: p.value)
        kinds = {p.load for p in mine}
        if len(kinds) > 1:
            opened = next(p.source for p in mine if p.load == "rps")
            closed = next(p.source for p in mine if p.load == "concurrency")
            raise RidgelineError(f"the {tool} results mix request rates ({opened}) and "
                                 f"concurrencies ({closed}): one curve has one load axis")
        curves.append(MeasuredCurve(tool, mine))
    return curves


def read_file(path: PathLike) -> list[MeasuredPoint]:
    """The points of one result file (a vLLM file written with --append-result holds several)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return [_aiperf_csv(path)]
    docs = _json_documents(path)
    out = []
    for doc in docs:
        tool = _json_tool(doc, path)
        out.append(_vllm(doc, path) if tool == VLLM else _aiperf_json(doc, path))
    return out


def _expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a folder becomes the AIPerf exports below it, else its vLLM JSONs."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob(AIPERF_JSON))
            found += sorted(c for c in p.rglob(AIPERF_CSV) if not (c.parent / AIPERF_JSON).exists())
            if not found:
                found = sorted(f for f in p.glob("*.json") if not f.name.endswith(".pytorch.json"))
            if not found:
                raise RidgelineError(f"{p}: no benchmark results in this folder (looked for "
                                     f"{AIPERF_JSON}, {AIPERF_CSV} and vLLM *.json)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise RidgelineError(f"{p}: no such file or folder")
    return out


def _json_documents(path: Path) -> list[Any]:
    """One JSON document, or several on separate lines (vllm bench serve --append-result)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RidgelineError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:
            try:
                return [json.loads(ln) for ln in lines]
            except json.JSONDecodeError:
                pass
        raise RidgelineError(f"{path} is not valid JSON (line {whole.lineno}: {whole.msg})") \
            from None


def _json_tool(doc: Any, path: Path) -> str:
    if isinstance(doc, list):
        raise RidgelineError(f"{path} holds a JSON list: give the result JSON itself (vLLM's "
                             f"*.pytorch.json copy or AIPerf's per-request profile_export.jsonl "
                             f"are not read)")
    if not isinstance(doc, dict):
        raise RidgelineError(f"{path} is not a benchmark result (a JSON object was expected)")
    if "input_config" in doc or isinstance(doc.get("time_to_first_token"), dict) \
            or isinstance(doc.get("request_throughput"), dict):
        return AIPERF
    if "metadata" in doc and "metrics" in doc:
        raise RidgelineError(f"{path} is an AIPerf per-request record: give the run's "
                             f"{AIPERF_JSON}")
    if "completed" in doc or "mean_ttft_ms" in doc or "request_rate" in doc:
        return VLLM
    raise RidgelineError(f"{path} is neither a `vllm bench serve --save-result` result nor an "
                         f"AIPerf {AIPERF_JSON} (none of their fields found)")


# ------------------------------------------------------------------------------ numbers

def _number(value: Any, what: str, path: Path) -> float | None:
    """A finite float, None when absent or null; a one-line error for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RidgelineError(f"{path}: {what} is not a number ({value!r})")
    v = float(value)
    return v if math.isfinite(v) else None


def _seconds_per(unit: Any, what: str, path: Path) -> float:
    factor = SECONDS_PER.get(str(unit).strip().lower())
    if factor is None:
        raise RidgelineError(f"{path}: {what} is in {unit!r}; expected one of "
                             f"{', '.join(SECONDS_PER)}")
    return factor


def _percentile_s(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


# ------------------------------------------------------------------------------ vLLM

VLLM_METRICS = {"ttft_s": "ttft", "itl_s": "itl", "e2e_s": "e2el", "tpot_s": "tpot"}


def _vllm(doc: dict[str, Any], path: Path) -> MeasuredPoint:
    src = str(path)
    notes: list[str] = []
    load, value, cv = _vllm_load(doc, path)
    ok = _vllm_successes(doc, path)
    lists = _vllm_lists(doc, ok, path)
    stats: dict[str, MeasuredStat] = {}
    for name, m in VLLM_METRICS.items():
        got = {"mean": _number(doc.get(f"mean_{m}_ms"), f"mean_{m}_ms", path),
               "p50": _number(doc.get(f"median_{m}_ms", doc.get(f"p50_{m}_ms")),
                              f"median_{m}_ms", path),
               "p95": _number(doc.get(f"p95_{m}_ms"), f"p95_{m}_ms", path),
               "p99": _number(doc.get(f"p99_{m}_ms"), f"p99_{m}_ms", path)}
        got = {s: None if v is None else v / 1e3 for s, v in got.items()}
        per_request = lists.get(name)
        filled = []
        if per_request is not None:
            for s, q in (("p50", 50), ("p95", 95), ("p99", 99)):
                if got[s] is None and len(per_request):
                    got[s] = _percentile_s(per_request, q)
                    filled.append(s.upper())
            if got["mean"] is None and len(per_request):
                got["mean"], filled = float(np.mean(per_request)), filled + ["mean"]
        if filled:
            notes.append(f"{name[:-2].upper()} {', '.join(filled)} computed from the "
                         "per-request lists")
        stats[name] = MeasuredStat(**got)
    duration = _number(doc.get("duration"), "duration", path)
    conc = None
    lat = lists.get("e2e_s")
    if lat is not None and duration:
        conc = float(np.sum(lat)) / duration
    completed = _number(doc.get("completed"), "completed", path)
    failed = _number(doc.get("failed"), "failed", path)
    if failed:
        notes.append(f"{failed:.0f} failed request{'s' if failed != 1 else ''} "
                     "(not in the statistics)")
    point = MeasuredPoint(
        VLLM, src, load, value, stats["ttft_s"], stats["itl_s"], stats["e2e_s"], stats["tpot_s"],
        request_throughput=_number(doc.get("request_throughput"), "request_throughput", path),
        output_tokens_per_s=_number(doc.get("output_throughput"), "output_throughput", path),
        total_tokens_per_s=_number(doc.get("total_token_throughput"), "total_token_throughput",
                                   path),
        mean_concurrency=conc, requests=None if completed is None else int(completed),
        duration_s=duration, arrival_cv=cv, notes=notes)
    _require_results(point, path)
    return point


def _vllm_load(doc: dict[str, Any], path: Path) -> tuple[str, float, float | None]:
    if doc.get("ramp_up_strategy"):
        raise RidgelineError(f"{path}: a ramp-up run ({doc['ramp_up_strategy']}) has no single "
                             "load to place on the curve")
    rate = doc.get("request_rate")
    conc = _number(doc.get("max_concurrency"), "max_concurrency", path)
    if isinstance(rate, str) and rate.strip().lower() in ("inf", "infinity"):
        rate = None
    else:
        rate = _number(rate, "request_rate", path)
    if rate is not None and rate > 0:
        b = _number(doc.get("burstiness"), "burstiness", path)
        return "rps", rate, (1.0 / math.sqrt(b) if b and b > 0 else None)
    if conc is not None and conc >= 1:
        return "concurrency", conc, None
    raise RidgelineError(f"{path}: request_rate is inf and no max_concurrency is set: every "
                         "request was sent at once, there is no load to place on the curve")


def _vllm_successes(doc: dict[str, Any], path: Path) -> list[bool] | None:
    """Which per-request entries succeeded, or None when that cannot be told."""
    errors = doc.get("errors")
    if isinstance(errors, list):
        return [not e for e in errors]
    n = doc.get("completed")
    if _number(doc.get("failed"), "failed", path) == 0 and isinstance(n, int):
        return [True] * n  # nothing failed: every entry is a success
    return None


def _vllm_lists(doc: dict[str, Any], ok: list[bool] | None, path: Path) -> dict[str, list[float]]:
    """Per-request TTFT, E2E and TPOT, pooled ITL (seconds), of the successful requests."""
    if ok is None:
        return {}
    out: dict[str, list[float]] = {}
    for name, key in (("ttft_s", "ttfts"), ("e2e_s", "latencies"), ("itl_s", "itls")):
        values = doc.get(key)
        if not isinstance(values, list):
            continue
        if len(values) != len(ok):
            raise RidgelineError(f"{path}: {key} has {len(values)} entries for {len(ok)} "
                                 "requests")
        kept = [v for v, good in zip(values, ok) if good]
        try:
            if name == "itl_s":
                out[name] = [float(g) for gaps in kept for g in gaps]
            else:
                out[name] = [float(v) for v in kept]
        except (TypeError, ValueError):
            raise RidgelineError(f"{path}: {key} holds something that is not a number") \
                from None
    lens = doc.get("output_lens")
    if "ttft_s" in out and "e2e_s" in out and isinstance(lens, list) and len(lens) == len(ok):
        # vLLM's TPOT of a request: (latency - TTFT) / (output tokens - 1), when more than one
        kept = [n for n, good in zip(lens, ok) if good]
        out["tpot_s"] = [(e - t) / (n - 1) for t, e, n in zip(out["ttft_s"], out["e2e_s"], kept)
                         if isinstance(n, int) and n > 1]
    return out


# ------------------------------------------------------------------------------ AIPerf

# metric tag -> (point field, CSV header); inter_token_latency is per-request TPOT in AIPerf
AIPERF_METRICS = {"time_to_first_token": ("ttft_s", "Time to First Token"),
                  "inter_chunk_latency": ("itl_s", "Inter Chunk Latency"),
                  "request_latency": ("e2e_s", "Request Latency"),
                  "inter_token_latency": ("tpot_s", "Inter Token Latency")}
AIPERF_SCALARS = {"request_throughput": "Request Throughput",
                  "output_token_throughput": "Output Token Throughput",
                  "request_count": "Request Count", "benchmark_duration": "Benchmark Duration",
                  "total_isl": "Total Input Sequence Length",
                  "total_osl": "Total Output Sequence Length"}


def _aiperf_json(doc: dict[str, Any], path: Path) -> MeasuredPoint:
    blocks = {tag: doc[tag] for tag in list(AIPERF_METRICS) + list(AIPERF_SCALARS)
              if isinstance(doc.get(tag), dict)}
    load, value, cv = _aiperf_load_from_config(doc, path) or _aiperf_load_from_folder(path)
    return _aiperf_point(blocks, path, load, value, cv)


def _aiperf_csv(path: Path) -> MeasuredPoint:
    by_header = {h: tag for tag, (_, h) in AIPERF_METRICS.items()}
    by_header.update({h: tag for tag, h in AIPERF_SCALARS.items()})
    blocks = aiperf_csv_blocks(path, by_header)
    if not blocks:
        raise RidgelineError(f"{path} is not an AIPerf {AIPERF_CSV} (no 'Metric,...' section "
                             "with its metrics)")
    load = None
    beside = path.parent / AIPERF_JSON
    if beside.is_file():
        docs = _json_documents(beside)
        if docs and isinstance(docs[0], dict):
            load = _aiperf_load_from_config(docs[0], beside)
    load = load or _aiperf_load_from_folder(path)
    return _aiperf_point(blocks, path, *load)


def aiperf_csv_blocks(path: Path, by_header: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The rows of an AIPerf CSV named in `by_header` ("Name" -> JSON tag) as blocks like the
    JSON export's: {tag: {"unit", "avg", "p50", ...}} (sections: a 'Metric,...' header row,
    then 'Name (unit),values' rows; a blank line ends one; "Value" is read as "avg")."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RidgelineError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    blocks: dict[str, dict[str, Any]] = {}
    columns: list[str] | None = None
    for row in rows:
        if not row or not any(c.strip() for c in row):
            columns = None  # a blank line ends a section
            continue
        if row[0].strip() == "Metric":
            columns = [c.strip() for c in row]
            continue
        if columns is None:
            continue
        name, unit = _split_header(row[0])
        tag = by_header.get(name)
        if tag is None:
            continue
        block: dict[str, Any] = {"unit": unit}
        for col, cell in zip(columns[1:], row[1:]):
            if cell.strip():
                try:
                    block["avg" if col == "Value" else col] = float(cell)
                except ValueError:
                    raise RidgelineError(f"{path}: {row[0]} {col} is not a number ({cell!r})") \
                        from None
        blocks[tag] = block
    return blocks


def _split_header(text: str) -> tuple[str, str | None]:
    """'Time to First Token (ms)' -> ('Time to First Token', 'ms'); 'Request Count' -> (.., None)"""
    m = re.fullmatch(r"\s*(.*?)\s*\(([^()]*)\)\s*", text)
    return (m.group(1), m.group(2)) if m else (text.strip(), None)


def _aiperf_load_from_config(doc: dict[str, Any], path: Path):
    """(load, value, arrival CV) from the exported config; None when it names no load."""
    cfg = doc.get("input_config") if isinstance(doc.get("input_config"), dict) else {}
    inputs = cfg.get("input") if isinstance(cfg.get("input"), dict) else {}
    if inputs.get("fixed_schedule"):
        raise RidgelineError(f"{path}: a fixed-schedule (trace replay) run has no single load "
                             "to place on the curve")
    phases = cfg.get("phases") if isinstance(cfg.get("phases"), dict) else {}
    for section in (cfg.get("loadgen"), phases.get("profiling")):
        if not isinstance(section, dict):
            continue
        rate = _number(section.get("request_rate"), "request_rate", path)
        conc = _number(section.get("concurrency"), "concurrency", path)
        if rate:  # AIPerf's rule: a rate wins, a concurrency beside it only caps it
            mode = str(section.get("request_rate_mode") or "poisson").lower()
            return "rps", rate, 0.0 if mode == "constant" else 1.0
        if conc:
            return "concurrency", conc, None
    return None


def _aiperf_load_from_folder(path: Path) -> tuple[str, float, float | None]:
    """AIPerf names its artifact folder <model>-<endpoint>-concurrency8 / -request_rate10.0."""
    name = path.parent.name
    rate = re.search(r"request_rate(\d+(?:\.\d+)?)", name)
    if rate:
        return "rps", float(rate.group(1)), None
    conc = re.search(r"concurrency(\d+)", name)
    if conc:
        return "concurrency", float(conc.group(1)), None
    raise RidgelineError(f"{path}: no load found (no input_config.loadgen request_rate or "
                         f"concurrency, no {AIPERF_JSON} beside it, and the folder name "
                         f"{name!r} names none)")


def _aiperf_stat(block: dict[str, Any] | None, tag: str, path: Path) -> MeasuredStat:
    if not block:
        return MeasuredStat()
    per = _seconds_per(block.get("unit"), tag, path)
    vals = {s: _number(block.get("avg" if s == "mean" else s), f"{tag}.{s}", path)
            for s in STATS}
    return MeasuredStat(**{s: None if v is None else v * per for s, v in vals.items()})


def _aiperf_point(blocks: dict[str, dict[str, Any]], path: Path, load: str, value: float,
                  cv: float | None) -> MeasuredPoint:
    def scalar(tag: str) -> float | None:
        b = blocks.get(tag)
        return None if b is None else _number(b.get("avg"), f"{tag}.avg", path)

    stats = {name: _aiperf_stat(blocks.get(tag), tag, path)
             for tag, (name, _) in AIPERF_METRICS.items()}
    duration = scalar("benchmark_duration")
    if duration is not None:
        duration *= _seconds_per(blocks["benchmark_duration"].get("unit") or "sec",
                                 "benchmark_duration", path)
    total = None
    isl, osl = scalar("total_isl"), scalar("total_osl")
    if duration and isl is not None and osl is not None:
        total = (isl + osl) / duration
    conc = None
    lat = blocks.get("request_latency") or {}
    lat_sum = _number(lat.get("sum"), "request_latency.sum", path)
    if duration and lat_sum is not None:  # schema 1.1+: time-average of requests in flight
        conc = lat_sum * _seconds_per(lat.get("unit"), "request_latency", path) / duration
    notes = []
    if "inter_chunk_latency" not in blocks and "inter_token_latency" in blocks:
        notes.append("no inter_chunk_latency: AIPerf's inter_token_latency is per-request TPOT, "
                     "shown as tpot_s, not as ITL")
    count = scalar("request_count")
    point = MeasuredPoint(
        AIPERF, str(path), load, value, stats["ttft_s"], stats["itl_s"], stats["e2e_s"],
        stats["tpot_s"], request_throughput=scalar("request_throughput"),
        output_tokens_per_s=scalar("output_token_throughput"), total_tokens_per_s=total,
        mean_concurrency=conc, requests=None if count is None else int(count),
        duration_s=duration, arrival_cv=cv if load == "rps" else None, notes=notes)
    _require_results(point, path)
    return point


def _require_results(p: MeasuredPoint, path: Path) -> None:
    if len(p.missing) == len(LATENCIES) * len(STATS) and p.request_throughput is None:
        raise RidgelineError(f"{path}: no latency or throughput results in it")
