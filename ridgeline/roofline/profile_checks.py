"""Value checks of a profile: every number the planner and the reports read, and every container.

    check_values(data, where)     # ProfileError, one line naming the first bad field path:
    # malformed profile (p.json): 'ceilings.memory_bandwidth_GBps.read' is NaN

Called by roofline.profile.validate_profile after the header (kind, schema_version) checks.
A number must be finite, non-negative (some: positive) and below a physical limit;
a field documented as optional may be null (ridgeline writes NaN and "not measured"
as null, and every reader handles null). Containers must have the type their
readers expect (an object, a list of strings, ...). Unknown keys are left alone:
a newer ridgeline may add fields.

Limits are generous on purpose: they catch corruption and unit mix-ups (MB/s
stored as GB/s, bytes as GiB), never a slow or a new device:

    bandwidth       <= 1e6 GB/s       (HBM3e ~ 5e3 GB/s)
    matmul          <= 1e5 TFLOP/s    (the fastest dense fp8 ~ 5e3)
    device memory   <= 64 TiB
    times           <= 1e7 us / ms    (a fixed cost of 10 s; a record of ~3 h)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, NoReturn

from ridgeline.errors import ProfileError
from ridgeline.roofline.interconnect import COLLECTIVES
from ridgeline.roofline.trust import STATUSES


class Limit(NamedTuple):
    high: float
    unit: str = ""
    shown: str = ""          # the limit as people say it ("64 TiB"); default: the number
    low: float = 0.0

    def text(self) -> str:
        return self.shown or f"{self.high:g} {self.unit}".strip()


BANDWIDTH = Limit(1e6, "GB/s")
THROUGHPUT = Limit(1e5, "TFLOP/s")
MEMORY = Limit(64 * 2**40, "bytes", "64 TiB")
WORK_BYTES = Limit(2**50, "bytes", "1 PiB")
WORK_FLOP = Limit(1e21, "FLOP")
TIME_US = Limit(1e7, "us")
TIME_MS = Limit(1e7, "ms")
TIME_S = Limit(1e7, "s")
COUNT = Limit(1e9)                       # shape dimensions, points, world sizes
RATIO = Limit(1e6)                       # relative errors and spreads, slowdowns
INTENSITY = Limit(1e9, "FLOP/B")
POWER = Limit(1e5, "W")
# smax_p: p = 1 is no overlap (a sum), larger is more; p < 1 would be slower than a sum
OVERLAP_P = Limit(1e3, low=1.0)

NOT_COLLECTIVES = ("host_link_GBps", "topology", "p2p", "inter_node_GBps")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"a number ({_show(value)})"
    return {dict: "an object", list: "a list", str: f"a string ({_show(value)})"}.get(
        type(value), type(value).__name__)


class _Checker:
    """Raises ProfileError naming the field path; returns the checked container."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, what: str) -> NoReturn:
        raise ProfileError(f"malformed profile ({self.where}): '{path}' {what}")

    def number(self, value: Any, path: str, limit: Limit, *, required: bool = False,
               positive: bool = False, whole: bool = False) -> None:
        if value is None:
            if required:
                self.fail(path, "is missing or null")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"is {_kind(value)}, not a number")
        if isinstance(value, int):  # JSON integers have no size limit; floats overflow at 1e308
            value = float(value) if abs(value) < 10**300 else (math.inf if value > 0 else -math.inf)
        if math.isnan(value):
            self.fail(path, "is NaN")
        if math.isinf(value):
            self.fail(path, "is infinite")
        if value < 0:
            self.fail(path, f"is negative ({value:g})")
        if value < limit.low or (positive and value == 0):
            self.fail(path, f"is {value:g}, below its minimum {max(limit.low, 0):g}"
                      + (" (must be positive)" if positive else ""))
        if value > limit.high:
            self.fail(path, f"is {value:g} {limit.unit}".rstrip()
                      + f", above the physical limit {limit.text()}")
        if whole and value != int(value):
            self.fail(path, f"is {value:g}, not a whole number")

    def numbers(self, mapping: dict[str, Any], path: str, spec: dict[str, Limit],
                required: tuple[str, ...] = (), whole: tuple[str, ...] = ()) -> None:
        """Each key of `spec` present in `mapping` is a number within its limit."""
        for key, limit in spec.items():
            self.number(mapping.get(key), f"{path}.{key}", limit, required=key in required,
                        whole=key in whole)

    def table(self, value: Any, path: str, limit: Limit, *, required: bool = False) -> None:
        """An object whose every value is a number (or null) within `limit`."""
        for key, v in self.mapping(value, path, required=required).items():
            self.number(v, f"{path}.{key}", limit)

    def mapping(self, value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "is missing or null" if value is None
                      else f"is {_kind(value)}, not an object")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"is {_kind(value)}, not a list")
        return value

    def text(self, value: Any, path: str, *, required: bool = False) -> None:
        if value is None and not required:
            return
        if not isinstance(value, str):
            self.fail(path, "is missing or null" if value is None
                      else f"is {_kind(value)}, not a string")

    def texts(self, mapping: dict[str, Any], path: str, keys: tuple[str, ...]) -> None:
        for key in keys:
            self.text(mapping.get(key), f"{path}.{key}")

    def strings(self, value: Any, path: str) -> None:
        """A list of strings (warnings, notes, flags)."""
        for i, item in enumerate(self.sequence(value, path)):
            self.text(item, f"{path}[{i}]", required=True)

    def flag(self, value: Any, path: str, *, required: bool = False) -> None:
        if value is None and not required:
            return
        if not isinstance(value, bool):
            self.fail(path, "is missing or null" if value is None else f"is {_kind(value)}, "
                      "not true or false")


def check_values(data: dict[str, Any], where: str) -> None:
    """Every section of a profile whose header already passed (see the module docstring)."""
    c = _Checker(where)
    _provenance(c, data.get("provenance"))
    _ceilings(c, data.get("ceilings"))
    _model(c, data.get("model"))
    _interconnect(c, data.get("interconnect"))
    _efficiency(c, data.get("efficiency"))
    _datasheet(c, data.get("datasheet"))
    c.flag(data.get("complete"), "complete", required=True)
    c.text(data.get("incomplete_reason"), "incomplete_reason")
    c.flag(data.get("throttled"), "throttled")
    c.strings(data.get("warnings"), "warnings")
    for i, w in enumerate(c.sequence(data.get("waived"), "waived")):
        c.texts(c.mapping(w, f"waived[{i}]", required=True), f"waived[{i}]",
                ("probe", "provider", "dtype", "status", "reason"))
    _records(c, data.get("records"))


def _provenance(c: _Checker, prov: Any) -> None:
    prov = c.mapping(prov, "provenance", required=True)
    dev = c.mapping(prov.get("device"), "provenance.device", required=True)
    c.text(dev.get("name"), "provenance.device.name", required=True)
    c.texts(dev, "provenance.device", ("id", "kind"))
    # 0 is how a CPU whose memory size cannot be read is stored; the planner refuses it
    c.numbers(dev, "provenance.device", {"memory_bytes": MEMORY, "l2_cache_bytes": MEMORY,
                                         "multiprocessors": COUNT},
              required=("memory_bytes",), whole=("multiprocessors",))
    c.mapping(dev.get("dtypes"), "provenance.device.dtypes")
    command = prov.get("command_line")
    if command is not None and not isinstance(command, (list, str)):
        c.fail("provenance.command_line", f"is {_kind(command)}, not a list or a string")
    c.number(prov.get("duration_s"), "provenance.duration_s", TIME_S)
    c.texts(prov, "provenance", ("ridgeline_version", "timestamp_utc", "hostname"))
    c.mapping(prov.get("versions"), "provenance.versions")
    c.mapping(prov.get("telemetry_at_start"), "provenance.telemetry_at_start")
    sweep = c.mapping(prov.get("sweep"), "provenance.sweep")
    c.strings(sweep.get("probes"), "provenance.sweep.probes")


def _trust_fields(c: _Checker, detail: dict[str, Any], path: str) -> None:
    """status / reason / spread of a ceiling (see roofline.trust)."""
    status = detail.get("status")
    if status is not None and status not in STATUSES:
        c.fail(f"{path}.status", f"is {_show(status)}, not one of {', '.join(STATUSES)}")
    c.text(detail.get("reason"), f"{path}.reason")
    spread = c.mapping(detail.get("spread"), f"{path}.spread")
    c.numbers(spread, f"{path}.spread", {"samples_p20_p80": RATIO, "across_points": RATIO,
                                         "median_samples_p20_p80": RATIO})


def _ceilings(c: _Checker, ceil: Any) -> None:
    ceil = c.mapping(ceil, "ceilings", required=True)
    c.table(ceil.get("memory_bandwidth_GBps"), "ceilings.memory_bandwidth_GBps", BANDWIDTH,
            required=True)
    c.table(ceil.get("matmul_TFLOPS"), "ceilings.matmul_TFLOPS", THROUGHPUT, required=True)
    path = "ceilings.memory_bandwidth_detail"
    for kernel, d in c.mapping(ceil.get(path.split(".")[1]), path).items():
        d = c.mapping(d, f"{path}.{kernel}", required=True)
        c.numbers(d, f"{path}.{kernel}", {"bw_GBps": BANDWIDTH, "plateau_min_bytes": WORK_BYTES,
                                          "n_points": COUNT})
        c.table(d.get("per_provider_GBps"), f"{path}.{kernel}.per_provider_GBps", BANDWIDTH)
        c.text(d.get("provider"), f"{path}.{kernel}.provider")
        _trust_fields(c, d, f"{path}.{kernel}")
    path = "ceilings.matmul_detail"
    for dtype, d in c.mapping(ceil.get(path.split(".")[1]), path).items():
        d = c.mapping(d, f"{path}.{dtype}", required=True)
        c.numbers(d, f"{path}.{dtype}", {"m": COUNT, "n": COUNT, "k": COUNT,
                                         "time_ms_median": TIME_MS}, whole=("m", "n", "k"))
        c.text(d.get("provider"), f"{path}.{dtype}.provider")
        _trust_fields(c, d, f"{path}.{dtype}")
    c.strings(ceil.get("flags"), "ceilings.flags")


def _model(c: _Checker, model: Any) -> None:
    model = c.mapping(model, "model")
    c.numbers(model, "model", {"bandwidth_GBps": BANDWIDTH, "latency_floor_us": TIME_US,
                               "overhead_us": TIME_US, "overlap_p": OVERLAP_P})
    c.texts(model, "model", ("source", "form"))
    c.strings(model.get("notes"), "model.notes")
    c.strings(model.get("undetermined"), "model.undetermined")
    ovh = c.mapping(model.get("overhead"), "model.overhead")
    c.numbers(ovh, "model.overhead", {"graph_us": TIME_US, "eager_us": TIME_US})
    lat = c.mapping(model.get("latency"), "model.latency")
    c.numbers(lat, "model.latency", {"graph_us": TIME_US, "eager_us": TIME_US})
    for name, k in c.mapping(lat.get("kernels"), "model.latency.kernels").items():
        k = c.mapping(k, f"model.latency.kernels.{name}", required=True)
        c.number(k.get("time_us"), f"model.latency.kernels.{name}.time_us", TIME_US)
    bw = c.mapping(model.get("bandwidth"), "model.bandwidth")
    c.numbers(bw, "model.bandwidth", {"hbm_read_GBps": BANDWIDTH, "gemv_plateau_GBps": BANDWIDTH})
    plateau = c.mapping(bw.get("gemv_plateau"), "model.bandwidth.gemv_plateau")
    c.numbers(plateau, "model.bandwidth.gemv_plateau", {"GBps": BANDWIDTH, "n_points": COUNT})
    c.text(bw.get("reference_dtype"), "model.bandwidth.reference_dtype")
    c.table(bw.get("per_dtype_GBps"), "model.bandwidth.per_dtype_GBps", BANDWIDTH)
    c.strings(bw.get("per_dtype_tried"), "model.bandwidth.per_dtype_tried")
    for dtype, entry in c.mapping(model.get("matmul"), "model.matmul").items():
        _model_dtype(c, entry, f"model.matmul.{dtype}")
    ridge = c.mapping(model.get("ridge_point_FLOP_per_byte"), "model.ridge_point_FLOP_per_byte")
    for dtype, r in ridge.items():
        c.table(r, f"model.ridge_point_FLOP_per_byte.{dtype}", INTENSITY, required=True)
    _fit_error(c, model.get("fit_error"))
    for i, row in enumerate(c.sequence(model.get("gemv_best_provider"),
                                       "model.gemv_best_provider")):
        path = f"model.gemv_best_provider[{i}]"
        row = c.mapping(row, path, required=True)
        for key in ("dtype", "provider"):
            c.text(row.get(key), f"{path}.{key}", required=True)
        c.numbers(row, path, {"k": COUNT, "n": COUNT, "batch": COUNT, "time_ms_median": TIME_MS,
                              "bw_GBps": BANDWIDTH, "TFLOPS": THROUGHPUT,
                              "weight_bytes": WORK_BYTES, "runner_up_slowdown": RATIO},
                  required=("k", "n", "batch"), whole=("k", "n", "batch"))


def _model_dtype(c: _Checker, entry: Any, path: str) -> None:
    entry = c.mapping(entry, path, required=True)
    c.numbers(entry, path, {"peak_TFLOPS": THROUGHPUT, "flops_half": WORK_FLOP,
                            "best_measured_TFLOPS": THROUGHPUT, "datasheet_TFLOPS": THROUGHPUT})
    # the dtype's own streaming rate (optional): when present it prices its bytes, so 0 is
    # as malformed as NaN (the fit writes it only where it fitted one)
    c.number(entry.get("bandwidth_GBps"), f"{path}.bandwidth_GBps", BANDWIDTH, positive=True)
    c.table(entry.get("n_records"), f"{path}.n_records", COUNT)
    wave = c.mapping(entry.get("wave"), f"{path}.wave")
    if wave:
        for key in ("tile_m", "tile_n", "slots"):
            c.number(wave.get(key), f"{path}.wave.{key}", COUNT, required=True, positive=True,
                     whole=True)


def _fit_error(c: _Checker, fe: Any) -> None:
    fe = c.mapping(fe, "model.fit_error")
    for probe, e in fe.items():
        path = f"model.fit_error.{probe}"
        if probe == "target":
            c.table(e, path, RATIO)
        elif probe == "meets_target":
            c.flag(e, path)
        elif probe == "statistic":
            c.text(e, path)
        else:
            e = c.mapping(e, path, required=True)
            c.numbers(e, path, {"n": COUNT, "median": RATIO, "worst": RATIO},
                      required=("median", "worst"), whole=("n",))
            case = c.mapping(e.get("worst_case"), f"{path}.worst_case")
            c.numbers(case, f"{path}.worst_case", {"error": RATIO, "measured_ms": TIME_MS,
                                                   "predicted_ms": TIME_MS})


def _interconnect(c: _Checker, ic: Any) -> None:
    ic = c.mapping(ic, "interconnect")
    host = c.mapping(ic.get("host_link_GBps"), "interconnect.host_link_GBps")
    c.numbers(host, "interconnect.host_link_GBps", {d: BANDWIDTH for d in ("h2d", "d2h", "bidir")})
    c.table(host.get("latency_us"), "interconnect.host_link_GBps.latency_us", TIME_US)
    c.table(host.get("pageable"), "interconnect.host_link_GBps.pageable", BANDWIDTH)
    c.texts(host, "interconnect.host_link_GBps", ("source", "memory"))
    c.number(ic.get("inter_node_GBps"), "interconnect.inter_node_GBps", BANDWIDTH)
    c.mapping(ic.get("topology"), "interconnect.topology")
    p2p = c.mapping(ic.get("p2p"), "interconnect.p2p")
    for i, pair in enumerate(c.sequence(p2p.get("pairs"), "interconnect.p2p.pairs")):
        pair = c.mapping(pair, f"interconnect.p2p.pairs[{i}]", required=True)
        c.numbers(pair, f"interconnect.p2p.pairs[{i}]", {"bw_GBps": BANDWIDTH,
                                                         "latency_us": TIME_US})
    for name, per_world in ic.items():
        if name in NOT_COLLECTIVES:
            continue
        for world, fit in c.mapping(per_world, f"interconnect.{name}", required=True).items():
            path = f"interconnect.{name}.{world}"
            # the planner looks fits up by str(world size) and sorts them as integers; every
            # measured collective (all_to_all too, which it does not read yet) is keyed alike
            if name in COLLECTIVES and not (world.isdigit() and int(world) >= 1):
                c.fail(path, "is not keyed by a world size (a whole number >= 1)")
            fit = c.mapping(fit, path, required=True)
            _collective_fit(c, fit, path)
            for dtype, sub in c.mapping(fit.get("by_dtype"), f"{path}.by_dtype").items():
                _collective_fit(c, c.mapping(sub, f"{path}.by_dtype.{dtype}", required=True),
                                f"{path}.by_dtype.{dtype}")


def _collective_fit(c: _Checker, fit: dict[str, Any], path: str) -> None:
    c.numbers(fit, path, {"alpha_us": TIME_US, "busbw_GBps": BANDWIDTH, "algbw_GBps": BANDWIDTH,
                          "busbw_GBps_at_max_size": BANDWIDTH, "fit_error_median": RATIO,
                          "fit_error_worst": RATIO, "n_points": COUNT,
                          "size_min_bytes": WORK_BYTES, "size_max_bytes": WORK_BYTES,
                          "n_bandwidth_points": COUNT})
    c.texts(fit, path, ("link", "source", "dtype"))
    _trust_fields(c, fit, path)


def _efficiency(c: _Checker, section: Any) -> None:
    """{curve: {dtype: {"axes": [...], "points": [{<axis>: >0, "efficiency": >0, ...}]}}}."""
    for name, by_dtype in c.mapping(section, "efficiency").items():
        for dtype, curve in c.mapping(by_dtype, f"efficiency.{name}", required=True).items():
            path = f"efficiency.{name}.{dtype}"
            curve = c.mapping(curve, path, required=True)
            axes = curve.get("axes")
            c.strings(axes, f"{path}.axes")
            for i, point in enumerate(c.sequence(curve.get("points"), f"{path}.points")):
                where = f"{path}.points[{i}]"
                point = c.mapping(point, where, required=True)
                for axis in axes or []:
                    c.number(point.get(axis), f"{where}.{axis}", COUNT, required=True,
                             positive=True)
                c.number(point.get("efficiency"), f"{where}.efficiency", RATIO, required=True,
                         positive=True)
                c.numbers(point, where, {"time_ms": TIME_MS, "roofline_ms": TIME_MS,
                                         "spread": RATIO})
            _trust_fields(c, curve, path)


def _datasheet(c: _Checker, sheet: Any) -> None:
    sheet = c.mapping(sheet, "datasheet")
    c.numbers(sheet, "datasheet", {"memory_bytes": MEMORY, "memory_bandwidth_GBps": BANDWIDTH,
                                   "nvlink_GBps_bidirectional": BANDWIDTH,
                                   "infinity_fabric_GBps_bidirectional": BANDWIDTH,
                                   "power_W": POWER})
    c.table(sheet.get("matmul_TFLOPS"), "datasheet.matmul_TFLOPS", THROUGHPUT)
    c.texts(sheet, "datasheet", ("name", "source", "label", "sku"))


_RECORD_NUMBERS = {
    "size_bytes": WORK_BYTES, "weight_bytes": WORK_BYTES, "bytes_read": WORK_BYTES,
    "bytes_written": WORK_BYTES, "flops": WORK_FLOP, "m": COUNT, "n": COUNT, "k": COUNT,
    "batch": COUNT, "world_size": COUNT, "launches_per_sample": COUNT,
    "time_ms_median": TIME_MS, "time_ms_p20": TIME_MS, "time_ms_p80": TIME_MS,
    "time_ms_min": TIME_MS, "bw_GBps": BANDWIDTH, "TFLOPS": THROUGHPUT,
}
# fields readers group and sort by: a list or an object there cannot be hashed
_RECORD_TEXTS = ("probe", "provider", "kernel", "dtype", "status", "mode", "shape_kind", "timer",
                 "reason")


def _records(c: _Checker, records: Any) -> None:
    for i, rec in enumerate(c.sequence(records, "records")):
        path = f"records[{i}]"
        rec = c.mapping(rec, path, required=True)
        c.text(rec.get("probe"), f"{path}.probe", required=True)
        c.texts(rec, path, _RECORD_TEXTS[1:])
        c.numbers(rec, path, _RECORD_NUMBERS,
                  whole=("m", "n", "k", "batch", "world_size", "launches_per_sample"))
        c.flag(rec.get("validated"), f"{path}.validated")
        c.flag(rec.get("throttled"), f"{path}.throttled")
