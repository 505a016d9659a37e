"""Figures of a profile (PNG): the roofline chart, bandwidth vs working set, matmul vs size,
decode GEMV vs batch.

    paths = all_figures(profile, out_dir)        # {"roofline": Path, ...}; absent data -> no file

The roofline chart is log-log: arithmetic intensity I = flops / bytes (FLOP/byte)
against achieved TFLOP/s; a roof is min(I * bandwidth, peak). The roofs are the
measured ceilings (profile["ceilings"]: the read bandwidth plateau, the best
matmul per dtype, the numbers of the ceilings table), solid, with their ridge
points I* = peak / bandwidth; the fitted model (profile["model"]) is drawn apart,
dash-dot and labelled "fit"; datasheet roofs dashed and labelled "datasheet". A
ceiling that is not verified says so in the legend. Every figure draws on its own Figure with an Agg
canvas (no pyplot, no global backend switch), so importing this module or
rendering in a server never touches a display.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ridgeline.datasheets import matmul_peak_TFLOPS
from ridgeline.records import fastest_per_case, fit_ready, gemv_case_key
from ridgeline.roofline.sections import Ceilings, ModelSection, positive
from ridgeline.roofline.trust import GEMV_PLATEAU_MIN_WEIGHT_BYTES

DTYPE_COLORS = {"fp32": "tab:gray", "tf32": "tab:brown", "fp16": "tab:orange", "bf16": "tab:blue",
                "fp8_e4m3": "tab:red", "fp8_e4m3fnuz": "tab:red", "int8": "tab:purple"}
PROVIDER_STYLES = {"triton": "-", "torch": "--", "torch_scaled_mm": "-.", "numpy": ":"}


def _color(dtype: str, i: int = 0) -> str:
    return DTYPE_COLORS.get(dtype, f"C{i % 10}")


def _figure(width: float = 8.5, height: float = 5.8, ncols: int = 1):
    """A Figure on an Agg canvas (set here, not at import) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig, path: Path) -> Path:
    import io

    from ridgeline.outputs import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # drawn in memory, then written atomically: never half a PNG
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _bytes_label(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"


def _device_name(profile: dict[str, Any]) -> str:
    device = (profile.get("provenance") or {}).get("device") or {}
    return str(device.get("name", "unknown device"))


def _num(v: float) -> str:
    """Four significant digits with separators: 3,012 / 755.9 / 0.01650."""
    return f"{v:,.4g}"


# Which stream kernel's ceiling is the roof: decode streams weights, so read first.
ROOF_KERNELS = ("read", "copy", "triad", "write")
FIT_STYLE = "-."   # the fitted model: dash-dot, apart from measured (solid) and datasheet (dashed)


def _fit_bandwidth_GBps(profile: dict[str, Any]) -> tuple[float | None, str]:
    """The fitted model's bandwidth and what it was fitted on; (None, "") without a fit."""
    model = ModelSection.of(profile)
    if not positive(model.bandwidth_GBps):
        return None, ""
    src = (model.raw.get("bandwidth") or {}).get("source")
    return float(model.bandwidth_GBps), {"gemv": "fitted on decode GEMV",
                                            "hbm": "held at the hbm read plateau",
                                            "matmul": "fitted on matmul"}.get(src, "fit")


def _ceiling_bandwidth_GBps(profile: dict[str, Any]) -> tuple[float | None, str]:
    """The measured bandwidth ceiling the roof is drawn at (the number the ceilings table
    shows) and its kernel; (None, "") when none was measured."""
    table = Ceilings.of(profile).bandwidth_GBps
    for kernel in ROOF_KERNELS:
        if positive(table.get(kernel)):
            return float(table[kernel]), kernel
    return None, ""


def _ceiling_peaks_TFLOPS(profile: dict[str, Any]) -> dict[str, float]:
    table = Ceilings.of(profile).matmul_TFLOPS
    return {d: float(v) for d, v in table.items() if positive(v)}


def _trust_suffix(profile: dict[str, Any], name: str) -> str:
    """' (unverified)' / ' (noisy)' for a ceiling that is not verified (roofline.trust)."""
    from ridgeline.roofline.trust import ceiling_statuses

    for c in ceiling_statuses(profile):
        if c.name == name and not c.trusted:
            return f" ({c.status})"
    return ""


def _sheet(profile: dict[str, Any]) -> dict[str, Any]:
    return profile.get("datasheet") or {}


def _moved(rec: dict[str, Any]) -> float:
    return float(rec.get("bytes_read") or 0) + float(rec.get("bytes_written") or 0)


def best_gemv(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fastest validated gemv record per (dtype, batch, K, N)."""
    return [recs[0] for recs in fastest_per_case(records, "gemv", gemv_case_key).values()]


def _draw_roofs(ax, x, bw: float, peaks: dict[str, float], *, label,
                style: dict[str, Any], ridge: str | None) -> None:
    """min(I * bw, peak) per dtype: the bandwidth slope once (under the highest roof), a flat
    roof per dtype from its ridge point on; ridge: None, "filled" or "hollow" diamonds."""
    import numpy as np

    top = max(peaks.values())
    ax.plot(x, np.minimum(x * bw / 1e3, top), color="black", **style, label=label(None, bw))
    for i, (dtype, peak) in enumerate(sorted(peaks.items(), key=lambda kv: kv[1])):
        c = _color(dtype, i)
        at = peak * 1e3 / bw
        xs = x[x >= at]
        ax.plot(xs, np.full_like(xs, peak), color=c, **style, label=label(dtype, peak))
        if ridge == "filled":
            ax.scatter([at], [peak], marker="D", s=60, color=c, edgecolor="black", zorder=5)
            # alternate label sides so dtypes with close roofs (fp16/bf16) stay readable
            above = i % 2 == 0
            ax.annotate(f"ridge {dtype}\n{_num(at)} FLOP/B", (at, peak),
                        textcoords="offset points", xytext=(-8, 8) if above else (8, -10),
                        ha="right" if above else "left", va="bottom" if above else "top",
                        fontsize=7.5, color=c)
        elif ridge == "hollow":
            ax.scatter([at], [peak], marker="D", s=40, facecolor="none", edgecolor=c, zorder=5)


def roofline_chart(profile: dict[str, Any], path: Path) -> Path | None:
    """Log-log roofline: the measured ceilings as roofs (solid), the fitted model (dash-dot,
    "fit"), the datasheet (dashed), measured points; None when no ceiling was measured."""
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    import numpy as np

    bw, bw_kernel = _ceiling_bandwidth_GBps(profile)
    peaks = _ceiling_peaks_TFLOPS(profile)
    if not bw or not peaks:
        return None
    fit_bw, fit_src = _fit_bandwidth_GBps(profile)
    fit_peaks = ModelSection.of(profile).peaks_TFLOPS()
    records = profile.get("records") or []
    matmul = [r for r in fit_ready(records, "matmul") if r.get("TFLOPS") and _moved(r)]
    gemv = [r for r in best_gemv(records) if r.get("TFLOPS") and _moved(r)]
    sheet = _sheet(profile)
    sheet_bw = sheet.get("memory_bandwidth_GBps") if positive(
        sheet.get("memory_bandwidth_GBps")) else None
    sheet_peaks = {d: v for d in peaks if (v := matmul_peak_TFLOPS(sheet, d))}

    intensities = [r["flops"] / _moved(r) for r in matmul + gemv]
    ridges = [p * 1e3 / bw for p in peaks.values()]
    x_lo = max(min(intensities + ridges) / 3.0, 0.05)
    x_hi = max(intensities + ridges) * 4.0
    x = np.geomspace(x_lo, x_hi, 400)

    fig, ax = _figure(9.0, 6.2)
    ax.set_xscale("log")
    ax.set_yscale("log")

    def measured_label(dtype, v):
        if dtype is None:
            return (f"measured {bw_kernel} bandwidth {_num(v)} GB/s"
                    + _trust_suffix(profile, f"{bw_kernel} bandwidth"))
        return f"{dtype} roof {_num(v)} TFLOP/s" + _trust_suffix(profile, f"{dtype} matmul")

    _draw_roofs(ax, x, bw, peaks, label=measured_label,
                style={"lw": 2.2}, ridge="filled")
    if fit_bw and fit_peaks:
        _draw_roofs(ax, x, fit_bw, fit_peaks,
                    label=lambda d, v: (f"fit bandwidth {_num(v)} GB/s ({fit_src})" if d is None
                                        else f"fit {d} peak {_num(v)} TFLOP/s"),
                    style={"lw": 1.3, "ls": FIT_STYLE, "alpha": 0.8}, ridge=None)
    if sheet_bw and sheet_peaks:
        _draw_roofs(ax, x, sheet_bw, sheet_peaks,
                    label=lambda d, v: (f"datasheet {v:,.0f} GB/s" if d is None
                                        else f"datasheet {d} {v:,.0f} TFLOP/s"),
                    style={"lw": 1.2, "ls": "--", "alpha": 0.6}, ridge="hollow")
    kinds = {"square": "s", "llm": "^"}
    for i, dtype in enumerate(sorted({r["dtype"] for r in matmul})):
        for kind, marker in kinds.items():
            sel = [r for r in matmul
                   if r["dtype"] == dtype and (r.get("shape_kind") or "square") == kind]
            if sel:
                ax.scatter([r["flops"] / _moved(r) for r in sel], [r["TFLOPS"] for r in sel],
                           marker=marker, s=30, color=_color(dtype, i), edgecolor="black", lw=0.4,
                           alpha=0.85, zorder=4)
    handles, labels = ax.get_legend_handles_labels()
    if matmul:
        for kind, marker in kinds.items():
            if any((r.get("shape_kind") or "square") == kind for r in matmul):
                handles.append(Line2D([], [], ls="", marker=marker, color="gray", mec="black"))
                labels.append(f"matmul, {kind} shapes (color = dtype)")
    if gemv:
        batches = [float(r.get("batch") or r.get("m") or 1) for r in gemv]
        norm = LogNorm(vmin=min(batches), vmax=max(max(batches), 2))
        sc = ax.scatter([r["flops"] / _moved(r) for r in gemv], [r["TFLOPS"] for r in gemv],
                        c=batches, cmap="viridis", norm=norm, marker="o", s=22,
                        edgecolor=[_color(r["dtype"]) for r in gemv], lw=0.8, zorder=4)
        fig.colorbar(sc, ax=ax, label="decode GEMV batch size (edge color = weight dtype)",
                     pad=0.01)
        handles.append(Line2D([], [], ls="", marker="o", color="gray"))
        labels.append("decode GEMV, best provider")
    handles.append(Line2D([], [], ls="", marker="D", color="gray", mec="black"))
    labels.append("ridge point (measured ceilings; hollow = datasheet)")
    all_y = [r["TFLOPS"] for r in matmul + gemv] + list(peaks.values())
    tops = all_y + list(fit_peaks.values()) + list(sheet_peaks.values())
    ax.set_ylim(max(min(all_y) / 3.0, 1e-4), max(tops) * 2.5)
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved throughput (TFLOP/s)")
    ax.set_title(f"Roofline: {_device_name(profile)} (measured ceilings solid, fit dash-dot, "
                 "datasheet dashed)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(handles, labels, loc="lower right", fontsize=7.5, framealpha=0.9)
    return _save(fig, path)


def bandwidth_vs_size(profile: dict[str, Any], path: Path) -> Path | None:
    """Achieved GB/s against working set per (kernel, provider), with the L2 size marked."""
    hbm = [r for r in fit_ready(profile.get("records") or [], "hbm")
           if r.get("bw_GBps") and r.get("size_bytes")]
    if not hbm:
        return None
    fig, ax = _figure()
    ax.set_xscale("log", base=2)
    kernels = sorted({r["kernel"] for r in hbm})
    for i, kernel in enumerate(kernels):
        for provider in sorted({r["provider"] for r in hbm if r["kernel"] == kernel}):
            pts = sorted((r["size_bytes"], r["bw_GBps"]) for r in hbm
                         if r["kernel"] == kernel and r["provider"] == provider)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3.5, color=f"C{i}",
                    ls=PROVIDER_STYLES.get(provider, "-"), label=f"{kernel} ({provider})")
    device = (profile.get("provenance") or {}).get("device") or {}
    l2 = device.get("l2_cache_bytes")
    if l2:
        ax.axvline(l2, color="black", ls=":", lw=1.2)
        cache = "LLC" if device.get("kind") == "cpu" else "L2"
        ax.text(l2, 0.02, f" {cache} {_bytes_label(l2)}", transform=ax.get_xaxis_transform(),
                fontsize=8, va="bottom")
    sheet_bw = _sheet(profile).get("memory_bandwidth_GBps")
    if sheet_bw:
        ax.axhline(sheet_bw, color="black", ls="--", lw=1, alpha=0.6,
                   label=f"datasheet {sheet_bw:,.0f} GB/s")
    ceiling, kernel = _ceiling_bandwidth_GBps(profile)
    if ceiling:
        ax.axhline(ceiling, color="black", lw=1.2, alpha=0.8,
                   label=f"measured {kernel} ceiling {_num(ceiling)} GB/s"
                         + _trust_suffix(profile, f"{kernel} bandwidth"))
    bw, src = _fit_bandwidth_GBps(profile)
    if bw:
        ax.axhline(bw, color="black", lw=1.2, ls=FIT_STYLE, alpha=0.8,
                   label=f"fit bandwidth {_num(bw)} GB/s ({src})")
    sizes = sorted({r["size_bytes"] for r in hbm})
    ticks = [s for s in (2**k for k in range(10, 41)) if sizes[0] / 2 <= s <= sizes[-1] * 2]
    ax.set_xticks(ticks[:: max(1, len(ticks) // 10)])
    ax.set_xticklabels([_bytes_label(t) for t in ticks[:: max(1, len(ticks) // 10)]], rotation=30,
                       fontsize=8)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("working set (all arrays of the kernel)")
    ax.set_ylabel("achieved bandwidth (GB/s, GB = 1e9 B)")
    ax.set_title(f"Memory bandwidth vs working set: {_device_name(profile)}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="best")
    return _save(fig, path)


def matmul_vs_size(profile: dict[str, Any], path: Path) -> Path | None:
    """TFLOP/s against GEMM work (2MNK) per dtype, with the fitted model's square-GEMM curve."""
    import numpy as np

    matmul = [r for r in fit_ready(profile.get("records") or [], "matmul") if r.get("TFLOPS")]
    if not matmul:
        return None
    model = _model(profile)
    sheet = _sheet(profile)
    fig, ax = _figure()
    ax.set_xscale("log")
    ax.set_yscale("log")
    for i, dtype in enumerate(sorted({r["dtype"] for r in matmul})):
        c = _color(dtype, i)
        mine = [r for r in matmul if r["dtype"] == dtype]
        sq = sorted((r for r in mine if (r.get("shape_kind") or "square") == "square"),
                    key=lambda r: r["flops"])
        llm = [r for r in mine if r.get("shape_kind") == "llm"]
        if sq:
            ax.plot([r["flops"] for r in sq], [r["TFLOPS"] for r in sq], marker="s", ms=5, color=c,
                    label=f"{dtype} square (measured)")
        if llm:
            ax.scatter([r["flops"] for r in llm], [r["TFLOPS"] for r in llm], marker="^", s=28,
                       color=c, edgecolor="black", lw=0.4, label=f"{dtype} LLM shapes (measured)")
        if model is not None and sq:
            n = np.geomspace(min(r["m"] for r in sq), max(r["m"] for r in sq), 60)
            tf = [2.0 * v**3 / model.predict_gemm(int(v), int(v), int(v), dtype).time_s / 1e12
                  for v in n]
            ax.plot(2.0 * n**3, tf, color=c, ls=FIT_STYLE, lw=1.3, label=f"{dtype} fit (square)")
        ds = matmul_peak_TFLOPS(sheet, dtype)
        if ds:
            ax.axhline(ds, color=c, ls="--", lw=1, alpha=0.6,
                       label=f"datasheet {dtype} {ds:,.0f} TFLOP/s")
    ax.set_xlabel("GEMM work 2*M*N*K (FLOP)")
    ax.set_ylabel("achieved throughput (TFLOP/s)")
    ax.set_title(f"Matmul throughput vs size: {_device_name(profile)}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return _save(fig, path)


def _model(profile: dict[str, Any]):
    from ridgeline.roofline.model import RooflineModel

    try:
        return RooflineModel.from_profile(profile)
    except Exception:  # a profile without ceilings simply has no model curve
        return None


def gemv_vs_batch(profile: dict[str, Any], path: Path) -> Path | None:
    """Decode GEMV weight bandwidth and TFLOP/s against batch, per weight dtype and provider."""
    import numpy as np

    gemv = [r for r in fit_ready(profile.get("records") or [], "gemv") if r.get("time_ms_median")]
    if not gemv:
        return None
    large = [r for r in gemv if (r.get("weight_bytes") or 0) >= GEMV_PLATEAU_MIN_WEIGHT_BYTES]
    use = large or gemv
    scope = (f"median over weights >= {GEMV_PLATEAU_MIN_WEIGHT_BYTES / 1e6:.0f} MB" if large
             else "median over all weight shapes (none >= 64 MB)")
    series: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list))
    for r in use:
        series[(r["dtype"], r["provider"])][int(r.get("batch") or r.get("m") or 1)].append(r)
    fig, (ax_bw, ax_tf) = _figure(12.0, 5.2, ncols=2)
    dtypes = sorted({d for d, _ in series})
    for (dtype, provider), per_batch in sorted(series.items()):
        c = _color(dtype, dtypes.index(dtype))
        b = sorted(per_batch)
        bw = [float(np.median([r.get("bw_GBps") or 0 for r in per_batch[k]])) for k in b]
        tf = [float(np.median([r.get("TFLOPS") or 0 for r in per_batch[k]])) for k in b]
        ls = PROVIDER_STYLES.get(provider, "-")
        ax_bw.plot(b, bw, marker="o", ms=3.5, color=c, ls=ls, label=f"{dtype} {provider}")
        ax_tf.plot(b, tf, marker="o", ms=3.5, color=c, ls=ls, label=f"{dtype} {provider}")
    model = _model(profile)
    m_bw, src = _fit_bandwidth_GBps(profile)
    if m_bw:
        ax_bw.axhline(m_bw, color="black", lw=1.2, ls=FIT_STYLE, alpha=0.8,
                      label=f"fit bandwidth {_num(m_bw)} GB/s ({src})")
    ceiling, kernel = _ceiling_bandwidth_GBps(profile)
    if ceiling:
        ax_bw.axhline(ceiling, color="gray", lw=1.2,
                      label=f"measured {kernel} ceiling {_num(ceiling)} GB/s"
                            + _trust_suffix(profile, f"{kernel} bandwidth"))
    sheet_bw = _sheet(profile).get("memory_bandwidth_GBps")
    if sheet_bw:
        ax_bw.axhline(sheet_bw, color="black", ls="--", lw=1, alpha=0.6,
                      label=f"datasheet {sheet_bw:,.0f} GB/s")
    if model is not None:
        # the model's prediction for the largest weight shape of each dtype
        for dtype in dtypes:
            rows = [r for r in use if r["dtype"] == dtype]
            k, n = max(((r["k"], r["n"]) for r in rows), key=lambda kn: kn[0] * kn[1])
            seen: dict[int, dict[str, Any]] = {}  # one record per batch (providers share the work)
            for r in rows:
                if (r["k"], r["n"]) == (k, n):
                    seen.setdefault(int(r.get("batch") or r.get("m") or 1), r)
            b = sorted(seen)
            t = [model.predict(seen[v]["flops"], _moved(seen[v]), dtype, m=v, n=n).time_s
                 for v in b]
            c = _color(dtype, dtypes.index(dtype))
            ax_bw.plot(b, [_moved(seen[v]) / tt / 1e9 for v, tt in zip(b, t)], color=c, lw=3,
                       alpha=0.25, label=f"{dtype} fit, {k}x{n}")
            ax_tf.plot(b, [seen[v]["flops"] / tt / 1e12 for v, tt in zip(b, t)], color=c, lw=3,
                       alpha=0.25, label=f"{dtype} fit, {k}x{n}")
    for ax in (ax_bw, ax_tf):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (tokens per decode step)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    ax_tf.set_yscale("log")
    ax_bw.set_ylim(bottom=0)
    ax_bw.set_ylabel("achieved bandwidth, all bytes (GB/s)")
    ax_tf.set_ylabel("achieved throughput (TFLOP/s)")
    ax_bw.set_title(f"Decode GEMV bandwidth vs batch ({scope})", fontsize=9)
    ax_tf.set_title("Decode GEMV TFLOP/s vs batch", fontsize=9)
    fig.suptitle(f"Decode GEMV y = x @ W.T: {_device_name(profile)}")
    return _save(fig, path)


FIGURES = {
    "roofline": (roofline_chart, "The roofline: measured ceilings (solid), fitted model "
                                 "(dash-dot), datasheet (dashed), measured GEMM and decode GEMV "
                                 "points, ridge points of the measured ceilings"),
    "bandwidth_vs_size": (bandwidth_vs_size,
                          "Memory bandwidth against working-set size per kernel and provider; the "
                          "dotted line marks the L2 (GPU) or last-level cache (CPU) size"),
    "matmul_vs_size": (matmul_vs_size, "Matmul TFLOP/s against GEMM size per dtype, with the "
                                       "fitted model's curve for square GEMMs"),
    "gemv_vs_batch": (gemv_vs_batch, "Decode GEMV bandwidth and TFLOP/s against batch size, "
                                     "per weight dtype and provider"),
}


def all_figures(profile: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Every figure the profile has data for, as out_dir/<name>.png."""
    out = Path(out_dir)
    written = {}
    for name, (draw, _caption) in FIGURES.items():
        path = draw(profile, out / f"{name}.png")
        if path is not None:
            written[name] = path
    return written
