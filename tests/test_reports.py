"""Reports: report.md / report.html / PNG figures, the tables, `ridgeline report` and `compare`."""

import copy
import json
import re

import pytest

from ridgeline.cli import main
from ridgeline.records import make_record, waived_record
from ridgeline.reports.compare import compare_profiles
from ridgeline.reports.render import write_report
from ridgeline.reports.tables import ceiling_status_by_name, ceilings_table, status_notes, to_markdown
from ridgeline.roofline.model_fit import fit_model
from ridgeline.roofline.profile import new_profile, save_profile
from ridgeline.timing import FakeTimer, Work

DEVICE = {"id": "cuda:0", "kind": "cuda", "name": "Fake GPU 80GB", "memory_bytes": 80 * 2**30,
          "multiprocessors": 100, "l2_cache_bytes": 8 * 2**20, "compute_capability": "9.0",
          "driver_version": "999.1", "runtime_version": "12.9"}
SHEET = {"label": "vendor datasheet (not measured)", "name": "Fake GPU", "source": "fake sheet",
         "memory_bandwidth_GBps": 1000.0, "matmul_TFLOPS": {"bf16": 100.0, "fp32": 20.0}}
VERIFIED = {"status": "verified", "reason": None,
            "spread": {"samples_p20_p80": 0.06, "across_points": 0.02}}
CEILINGS = {"memory_bandwidth_GBps": {"read": 950.0, "copy": 900.0},
            "memory_bandwidth_detail": {"read": dict(VERIFIED), "copy": dict(VERIFIED)},
            "matmul_TFLOPS": {"bf16": 80.0, "fp32": 15.0},
            "matmul_detail": {"bf16": {"provider": "torch", "m": 4096, "n": 4096, "k": 4096,
                                       **VERIFIED},
                              "fp32": dict(VERIFIED)}}
FIGURES = ("roofline.png", "bandwidth_vs_size.png", "matmul_vs_size.png", "gemv_vs_batch.png")


def _records(timer: FakeTimer, *, gemv: bool = True) -> list[dict]:
    """hbm, matmul, gemv and launch records timed by the FakeTimer's roofline."""
    recs = []

    def rec(bytes_read=0, bytes_written=0, flops=0, **kw):
        timing = timer.time(lambda: None, work=Work(bytes=bytes_read + bytes_written, flops=flops))
        return make_record(timing=timing, validated=True, bytes_read=bytes_read,
                           bytes_written=bytes_written, flops=flops, **kw)

    for kernel, arrays in (("read", 1), ("copy", 2)):
        for provider in ("triton", "torch"):
            for e in range(16, 29, 2):
                size = 2**e
                recs.append(rec(probe="hbm", provider=provider, kernel=kernel, dtype="fp32",
                                bytes_read=size // arrays, bytes_written=size - size // arrays,
                                size_bytes=size))
    for dtype, e in (("fp32", 4), ("bf16", 2)):
        for m, n, k, kind in [(s, s, s, "square") for s in (256, 512, 1024, 2048)] + \
                             [(m, 2048, 1024, "llm") for m in (1, 16, 128)]:
            recs.append(rec(probe="matmul", provider="torch", kernel="gemm", dtype=dtype,
                            bytes_read=(m * k + k * n) * e, bytes_written=m * n * e,
                            flops=2 * m * n * k, m=m, n=n, k=k, shape_kind=kind))
    if gemv:
        for k, n in ((1024, 2048), (4096, 4096)):
            for b in (1, 2, 4, 8, 16, 64):
                for provider in ("torch", "triton"):
                    recs.append(rec(probe="gemv", provider=provider, dtype="bf16",
                                    bytes_read=k * n * 2 + b * k * 2, bytes_written=b * n * 2,
                                    flops=2 * b * n * k, batch=b, m=b, n=n, k=k,
                                    weight_bytes=k * n * 2))
    for mode in ("graph", "eager"):
        r = rec(probe="launch", provider="torch", kernel=f"torch_tiny_{mode}", dtype="fp32")
        r["mode"] = mode
        recs.append(r)
    return recs


def make_profile(*, gemv: bool = True, interconnect: bool = True) -> dict:
    profile = new_profile(DEVICE, command_line=["ridgeline", "profile", "--quick"], versions={},
                          sweep={"probes": ["hbm", "matmul", "gemv", "launch"], "quick": True})
    profile["records"] = _records(FakeTimer(bw_GBps=1000.0, peak_TFLOPS=100.0, latency_us=5.0),
                                  gemv=gemv)
    profile["records"].append(waived_record("matmul", "FP8 needs sm_89+", provider="torch",
                                            dtype="fp8_e4m3", m=4096, n=4096, k=4096))
    profile["waived"] = [{"probe": "matmul", "provider": "torch", "dtype": "fp8_e4m3",
                          "reason": "FP8 needs sm_89+"}]
    profile["datasheet"] = dict(SHEET)
    profile["ceilings"] = copy.deepcopy(CEILINGS)
    profile["model"] = fit_model(profile["records"], profile["ceilings"], profile["datasheet"],
                                 device=DEVICE)
    profile["complete"] = True
    if interconnect:
        profile["interconnect"] = {
            "host_link_GBps": {"h2d": 50.0, "d2h": 45.0, "source": "measured"},
            "allreduce": {"2": {"alpha_us": 10.0, "busbw_GBps": 300.0, "algbw_GBps": 150.0,
                                "link": "nvlink", "source": "measured", **VERIFIED}}}
    return profile


VALIDATION = {
    "kind": "ridgeline-validation", "model": "tiny", "weights": "random", "device": "Fake GPU 80GB",
    "profile": "profile.json", "layers_measured": 2, "layers_total": 2, "scaled": False,
    "points": [{"phase": "decode", "mode": "graph", "batch": 1, "context": 128, "measured_s": 0.002,
                "predicted_profile_s": 0.0021, "predicted_datasheet_s": 0.0015,
                "error_profile": 0.05, "error_datasheet": -0.25, "bound": "memory"}],
    "summary": {"decode": {"median_error_profile": 0.05, "worst_error_profile": 0.05,
                           "median_error_datasheet": 0.25, "worst_error_datasheet": 0.25}},
}


@pytest.fixture(scope="module")
def profile():
    return make_profile()


@pytest.fixture(scope="module")
def report_dir(profile, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(profile, out, VALIDATION)
    return out, paths


def test_report_files_exist(report_dir):
    out, paths = report_dir
    names = {p.name for p in paths}
    assert {"report.md", "report.html", *FIGURES} == names
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_html_is_self_contained_with_the_ceilings_table(report_dir):
    out, _ = report_dir
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'src="[^"]+\.png"', page)  # no link to a file beside it
    assert "<caption>Ceilings: measured against datasheet</caption>" in page
    assert "<td>read bandwidth</td><td>950 GB/s</td><td>1,000 GB/s</td><td>95%</td>" in page
    assert "<td>bf16 matmul</td><td>80.0 TFLOP/s</td><td>100.0 TFLOP/s</td><td>80%</td>" in page


def test_markdown_has_the_right_numbers_and_sections(report_dir, profile):
    out, _ = report_dir
    md = (out / "report.md").read_text()
    assert "| read bandwidth | 950 GB/s | 1,000 GB/s | 95% |" in md
    assert "| copy bandwidth | 900 GB/s | 1,000 GB/s | 90% |" in md
    assert "| fp32 matmul | 15.0 TFLOP/s | 20.0 TFLOP/s | 75% |" in md
    for name in FIGURES:
        assert f"]({name})" in md
    # provenance, status, waived, fit error, interconnect, validation
    assert "Fake GPU 80GB" in md and "driver 999.1" in md and "ridgeline profile --quick" in md
    assert "complete: every planned case ran" in md
    assert "| matmul | torch | fp8_e4m3 | FP8 needs sm_89+ |" in md
    fe = profile["model"]["fit_error"]["matmul"]
    assert f"| matmul | {fe['n']} | {100 * fe['median']:.1f}% | {100 * fe['worst']:.1f}% |" in md
    assert "## Interconnect" in md
    assert "| allreduce | 2 | 300.0 GB/s busbw | 10.0 us | nvlink |" in md
    assert "## Validation on a real transformer" in md
    assert "| decode | 5.0% | 5.0% | 25.0% | 25.0% |" in md
    assert "Figure not drawn" not in md


def test_ceilings_table_rows_and_note(profile):
    table = ceilings_table(profile)
    assert table.rows[0][:6] == ["copy bandwidth", "900 GB/s", "1,000 GB/s", "90%", "verified",
                                 "±3.0% / ±1.0%"]
    assert table.rows[0][-1] == "-"  # the detail names no provider
    bf16 = next(r for r in table.rows if r[0] == "bf16 matmul")
    assert bf16[-1] == "torch M=4096 N=4096 K=4096"
    assert "fake sheet" in table.note and "not measured" in table.note
    assert "half of (p80 - p20) / median" in table.note
    assert to_markdown(table).splitlines()[2] == \
        "| ceiling | measured | datasheet | measured / datasheet | status | spread | where |"


def untrusted(profile: dict) -> dict:
    """The profile with copy bandwidth unverified (a reason) and bf16 matmul noisy."""
    p = copy.deepcopy(profile)
    detail = p["ceilings"]["memory_bandwidth_detail"]["copy"]
    detail.update(status="unverified", reason="no plateau: the rate still rose at 1 GiB",
                  spread={"samples_p20_p80": 0.01, "across_points": 0.30})
    p["ceilings"]["matmul_detail"]["bf16"].update(status="noisy", reason=None,
                                                  spread={"samples_p20_p80": 0.25})
    return p


def test_ceilings_table_shows_unverified_and_noisy_with_spread(profile):
    rows = {r[0]: r for r in ceilings_table(untrusted(profile)).rows}
    # the cell holds the status; the reason is listed under the table and in the report's box
    assert rows["copy bandwidth"][4] == "unverified"
    assert rows["copy bandwidth"][5] == "±0.5% / ±15%"
    assert rows["bf16 matmul"][4:6] == ["noisy", "±12%"]
    assert rows["read bandwidth"][4] == "verified"
    # a profile written before statuses existed: unverified, and says why
    old = copy.deepcopy(profile)
    del old["ceilings"]["memory_bandwidth_detail"]
    rows = {r[0]: r for r in ceilings_table(old).rows}
    assert rows["read bandwidth"][4] == "unverified"
    assert any(n.startswith("read bandwidth unverified: measured before ridgeline checked")
               for n in status_notes(ceiling_status_by_name(old), ["read bandwidth"]))
    assert rows["read bandwidth"][5] == "-"


def test_report_warns_about_untrusted_ceilings_in_a_box(profile, tmp_path):
    write_report(untrusted(profile), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "> **WARNING: 2 ceiling(s) not verified" in md
    assert "> - copy bandwidth unverified: no plateau: the rate still rose at 1 GiB" in md
    assert "> - bf16 matmul noisy" in md
    page = (tmp_path / "report.html").read_text()
    assert '<div class="warnbox">' in page and "<li>bf16 matmul noisy</li>" in page
    assert "| allreduce | 2 | 300.0 GB/s busbw | 10.0 us | nvlink | measured | verified |" in md


def test_verified_profile_has_no_warning_box(report_dir):
    out, _ = report_dir
    assert "WARNING" not in (out / "report.md").read_text()


def _roofline_lines(profile, monkeypatch, tmp_path):
    """{legend label: (y values, linestyle)} of the roofline chart's lines."""
    from ridgeline.reports import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    assert plots.roofline_chart(profile, tmp_path / "r.png") is not None
    ax = drawn["fig"].axes[0]
    return {line.get_label(): (line.get_ydata(), line.get_linestyle()) for line in ax.get_lines()}


def test_roofline_roofs_are_the_measured_ceilings_and_the_fit_is_apart(profile, monkeypatch,
                                                                        tmp_path):
    lines = _roofline_lines(untrusted(profile), monkeypatch, tmp_path)
    # the table's numbers, solid: read bandwidth 950 GB/s, bf16 80 and fp32 15 TFLOP/s
    y, style = lines["bf16 roof 80 TFLOP/s (noisy)"]
    assert style == "-" and set(y) == {80.0}
    y, style = lines["fp32 roof 15 TFLOP/s"]
    assert style == "-" and set(y) == {15.0}
    y, style = lines["measured read bandwidth 950 GB/s"]
    assert style == "-" and max(y) == 80.0
    # the fitted model is drawn apart, dash-dot, labelled "fit"
    fit = {k: v for k, v in lines.items() if k.startswith("fit ")}
    peak = profile["model"]["matmul"]["bf16"]["peak_TFLOPS"]
    y, style = next(v for k, v in fit.items() if k.startswith("fit bf16 peak"))
    assert style == "-." and y[0] == pytest.approx(peak)
    assert any(k.startswith("fit bandwidth") for k in fit)
    y, style = lines["datasheet bf16 100 TFLOP/s"]
    assert style == "--" and set(y) == {100.0}


def test_undetermined_fit_terms_read_not_determined(profile):
    from ridgeline.reports.tables import model_table

    p = copy.deepcopy(profile)
    p["model"]["overhead_us"] = 1.13e-10  # an old profile's noise, no "undetermined" mark
    p["model"]["undetermined"] = ["matmul.bf16.flops_half"]
    table = model_table(p)
    assert "per-kernel overhead not determined" in table.note and "e-10" not in table.note
    assert next(r for r in table.rows if r[0] == "bf16")[4] == "not determined"


def test_the_model_table_names_per_dtype_bandwidths_when_fitted(profile):
    from ridgeline.reports.tables import model_table

    shared = model_table(profile).note
    assert shared.startswith(f"bandwidth {profile['model']['bandwidth_GBps']:,.0f} GB/s (from ")
    p = copy.deepcopy(profile)
    p["model"]["matmul"]["fp32"]["bandwidth_GBps"] = 450.0
    p["model"]["bandwidth"]["reference_dtype"] = "bf16"
    note = model_table(p).note
    assert note.startswith(f"bandwidth {p['model']['bandwidth_GBps']:,.0f} GB/s for bf16, "
                           "450 GB/s for fp32 (from ")


def test_incomplete_throttled_profile_is_flagged(tmp_path):
    p = make_profile(gemv=False, interconnect=False)
    p["complete"], p["incomplete_reason"] = False, "interrupted (Ctrl-C)"
    p["throttled"] = True
    p["warnings"] = ["sm clock dropped to 1500 MHz during matmul"]
    for r in p["records"]:
        if r["probe"] == "matmul" and r.get("m") == 2048:
            r["throttled"], r["throttle_reasons"] = True, "sw_power_cap,hw_slowdown"
    write_report(p, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "INCOMPLETE: interrupted (Ctrl-C)" in md
    assert "throttled" in md and "sm clock dropped" in md
    assert "throttled: 2 matmul record(s) (hw_slowdown, sw_power_cap)" in md
    assert "No validated gemv records." in md and "## Interconnect" not in md
    assert not (tmp_path / "gemv_vs_batch.png").exists()
    assert "Validation" not in md


def test_sparse_profiles_render_without_crashing(tmp_path):
    # CPU-like: hbm only, no datasheet, no model, no gemv, no interconnect
    p = new_profile({"id": "cpu", "kind": "cpu", "name": "Some CPU", "memory_bytes": 2**34,
                     "multiprocessors": 2, "l2_cache_bytes": None}, versions={})
    p["records"] = [r for r in _records(FakeTimer(bw_GBps=20.0, peak_TFLOPS=0.1), gemv=False)
                    if r["probe"] == "hbm"]
    p["ceilings"]["memory_bandwidth_GBps"] = {"read": 19.0}
    paths = write_report(p, tmp_path / "cpu")
    assert {x.name for x in paths} == {"report.md", "report.html", "bandwidth_vs_size.png"}
    md = (tmp_path / "cpu" / "report.md").read_text()
    assert "No roofline chart" in md and "No fitted model" in md
    assert "| read bandwidth | 19 GB/s | unverified | - |" in md  # no datasheet columns
    # an empty profile straight from new_profile
    empty = new_profile({"name": "x", "memory_bytes": 1}, versions={})
    paths = write_report(empty, tmp_path / "empty")
    assert {x.name for x in paths} == {"report.md", "report.html"}


def test_compare_ratios_and_gate(profile):
    node = copy.deepcopy(profile)
    node["ceilings"]["memory_bandwidth_GBps"]["read"] = 950.0 * 0.8      # 20% worse
    node["ceilings"]["matmul_TFLOPS"]["bf16"] = 80.0 * 1.05               # within 10%
    node["model"]["latency_floor_us"] = profile["model"]["latency_floor_us"] * 2  # fitted: no gate
    result = compare_profiles(node, profile)
    rows = {r["quantity"]: r for r in result["rows"]}
    assert rows["read bandwidth"]["ratio"] == pytest.approx(0.8)
    assert rows["read bandwidth"]["flag"] == "worse"
    assert rows["bf16 matmul"]["ratio"] == pytest.approx(1.05) and rows["bf16 matmul"]["flag"] == ""
    assert rows["copy bandwidth"]["ratio"] == 1.0
    assert rows["model latency floor"]["flag"] == "worse"
    assert rows["model latency floor"]["kind"] == "fitted"
    assert result["worse_ceilings"] == ["read bandwidth"] and result["exit_code"] == 1
    assert compare_profiles(node, profile, threshold=0.25)["exit_code"] == 0
    # better than the reference never fails the gate; a ceiling only one side has is listed
    faster = copy.deepcopy(profile)
    faster["ceilings"]["memory_bandwidth_GBps"]["read"] = 2000.0
    faster["ceilings"]["memory_bandwidth_GBps"]["triad"] = 900.0
    res = compare_profiles(faster, profile)
    rows = {r["quantity"]: r for r in res["rows"]}
    assert rows["read bandwidth"]["flag"] == "better" and res["exit_code"] == 0
    assert rows["triad bandwidth"]["flag"] == "only in node"
    assert rows["triad bandwidth"]["ratio"] is None


def test_compare_never_gates_on_an_unverified_ceiling(profile, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps the table to the terminal
    node = untrusted(profile)
    node["ceilings"]["memory_bandwidth_GBps"]["copy"] = 900.0 * 0.5    # 50% worse, unverified
    node["ceilings"]["matmul_TFLOPS"]["bf16"] = 80.0 * 1.5              # 50% better, noisy
    node["ceilings"]["matmul_TFLOPS"]["fp32"] = 15.0 * 0.5              # 50% worse, verified
    result = compare_profiles(node, profile)
    rows = {r["quantity"]: r for r in result["rows"]}
    copy_bw = rows["copy bandwidth"]
    assert copy_bw["flag"] == "unverified" and copy_bw["deviation"] == "worse"
    assert (copy_bw["node_status"], copy_bw["reference_status"]) == ("unverified", "verified")
    assert rows["bf16 matmul"]["flag"] == "unverified" and rows["bf16 matmul"]["ratio"] == 1.5
    assert rows["fp32 matmul"]["flag"] == "worse"
    assert result["worse_ceilings"] == ["fp32 matmul"] and result["exit_code"] == 1
    assert result["unverified_ceilings"] == [
        "copy bandwidth (node unverified, would be worse)",
        "bf16 matmul (node noisy, would be better)"]
    # on the command line: the status column and one line naming what was not gated
    node["ceilings"]["matmul_TFLOPS"]["fp32"] = 15.0
    node_path = save_profile(node, tmp_path / "node.json")
    ref_path = save_profile(profile, tmp_path / "ref.json")
    assert main(["compare", str(node_path), str(ref_path)]) == 0
    out = capsys.readouterr().out
    assert "unverified / verified" in out and "would be worse" in out
    assert "NOT GATED: unverified or noisy on either side" in out
    assert "OK: no verified ceiling worse" in out


def test_compare_skips_fitted_terms_either_side_could_not_determine(profile):
    node = copy.deepcopy(profile)
    node["model"]["overhead_us"] = 1.13e-10            # noise from an old fit, not marked
    node["model"]["undetermined"] = []
    node["model"]["matmul"]["bf16"]["flops_half"] = 2e9
    ref = copy.deepcopy(profile)
    ref["model"]["overhead_us"] = 424.0
    assert "matmul.bf16.flops_half" in ref["model"]["undetermined"]  # FakeTimer: no start-up
    rows = {r["quantity"]: r for r in compare_profiles(node, ref)["rows"]}
    ovh = rows["model per-kernel overhead"]
    assert ovh["ratio"] is None and ovh["flag"] == "not determined (node)"
    assert ovh["node"] is None and ovh["reference"] == 424.0
    start = rows["model bf16 GEMM start-up"]
    assert start["ratio"] is None and start["flag"] == "not determined (reference)"
    assert rows["model bandwidth"]["ratio"] == 1.0


def test_compare_cli_exit_codes_and_json(profile, tmp_path, capsys):
    ref = save_profile(profile, tmp_path / "ref.json")
    node = copy.deepcopy(profile)
    node["ceilings"]["matmul_TFLOPS"]["bf16"] = 60.0  # 25% below the reference
    node_path = save_profile(node, tmp_path / "node.json")
    assert main(["compare", str(node_path), str(ref), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["worse_ceilings"] == ["bf16 matmul"] and out["threshold"] == 0.10
    assert main(["compare", str(node_path), str(ref), "--threshold", "0.3"]) == 0
    assert "OK: no ceiling worse" in capsys.readouterr().out
    assert main(["compare", str(ref), str(ref)]) == 0


def test_report_cli_defaults_to_the_profile_folder(profile, tmp_path, capsys):
    path = save_profile(profile, tmp_path / "run" / "profile.json")
    (tmp_path / "run" / "validation.json").write_text(json.dumps(VALIDATION))
    assert main(["report", str(path)]) == 0
    assert "report.html" in capsys.readouterr().out
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Validation on a real transformer" in md  # picked up beside the profile
    assert main(["report", str(path), "-o", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_malformed_profile_is_one_line_and_exit_2(command, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "ridgeline-profile", "schema_version": 1')
    args = [command, str(bad)] + ([str(bad)] if command == "compare" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ridgeline {command}: error:") and "\n" not in err
    missing = [command, str(tmp_path / "missing.json")]
    assert main(missing + ([str(bad)] if command == "compare" else [])) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("command,flag", [("report", "--validation"), ("compare", "--threshold")])
def test_help_renders(command, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and flag in capsys.readouterr().out


def test_the_interconnect_table_shows_p2p_pairs_and_the_inter_node_link_in_world_order():
    from ridgeline.reports.tables import interconnect_table

    fit = {"busbw_GBps": 100.0, "alpha_us": 10.0, "source": "measured"}
    table = interconnect_table({"interconnect": {
        "allreduce": {"16": fit, "2": fit, "4": fit},
        "p2p": {"source": "measured", "pairs": [{"src": 0, "dst": 1, "path": "NV18",
                                                 "bw_GBps": 390.0, "latency_us": 8.0}]},
        "inter_node_GBps": 42.5}})
    assert [r[1] for r in table.rows if r[0] == "allreduce"] == ["2", "4", "16"]
    p2p = next(r for r in table.rows if r[0] == "p2p 0 -> 1")
    assert "390" in p2p[2] and p2p[4] == "NV18"
    inter = next(r for r in table.rows if r[0] == "inter-node link")
    assert "42.5" in inter[2]
