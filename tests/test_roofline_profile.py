"""Profile file: save/load round trip, schema validation, clear errors."""

import copy
import json

import pytest

from ridgeline import SCHEMA_VERSION
from ridgeline.errors import ProfileError
from ridgeline.roofline.ceilings import fit_ceilings
from ridgeline.roofline.profile import load_profile, new_profile, save_profile

DEVICE = {"name": "Test GPU", "kind": "cuda", "memory_bytes": 80 * 2**30, "l2_cache_bytes": 50 * 2**20}


def make_profile():
    p = new_profile(DEVICE, command_line=["ridgeline", "profile"], versions={"torch": "x"})
    p["complete"] = True
    p["ceilings"]["memory_bandwidth_GBps"]["copy"] = 3000.0
    return p


def test_round_trip_keeps_provenance_and_ceilings(tmp_path):
    path = save_profile(make_profile(), tmp_path / "p.json")
    loaded = load_profile(path)
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert loaded["provenance"]["command_line"] == ["ridgeline", "profile"]
    assert loaded["ceilings"]["memory_bandwidth_GBps"]["copy"] == 3000.0
    assert loaded["datasheet"] is None  # datasheet values live only under their own key


def test_nan_is_written_as_null(tmp_path):
    p = make_profile()
    p["ceilings"]["matmul_TFLOPS"]["bf16"] = float("nan")
    loaded = json.loads(save_profile(p, tmp_path / "p.json").read_text())
    assert loaded["ceilings"]["matmul_TFLOPS"]["bf16"] is None


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.pop("provenance"), "provenance"),
    (lambda p: p["ceilings"].pop("matmul_TFLOPS"), "matmul_TFLOPS"),
    (lambda p: p["ceilings"]["memory_bandwidth_GBps"].update(copy="fast"), "not a number"),
    (lambda p: p.update(kind="something-else"), "kind"),
    (lambda p: p.update(schema_version=SCHEMA_VERSION + 1), "newer"),
])
def test_malformed_profiles_get_one_clear_error(tmp_path, mutate, message):
    p = make_profile()
    mutate(p)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(p))
    with pytest.raises(ProfileError, match=message):
        load_profile(path)


NAN = float("nan")


def full_profile():
    """make_profile with every section the checks read filled in with sane values."""
    p = copy.deepcopy(make_profile())  # new_profile keeps DEVICE itself: mutations must not leak
    p["ceilings"]["matmul_TFLOPS"]["bf16"] = 700.0
    p["ceilings"]["memory_bandwidth_detail"] = {"copy": {
        "provider": "torch", "bw_GBps": 3000.0, "status": "verified", "reason": None,
        "spread": {"samples_p20_p80": 0.02, "across_points": 0.01}}}
    p["ceilings"]["matmul_detail"] = {"bf16": {"m": 8192, "n": 8192, "k": 8192,
                                               "status": "unverified", "reason": "one shape"}}
    p["model"] = {"bandwidth_GBps": 2900.0, "latency_floor_us": 3.0, "overhead_us": 2.0,
                  "overlap_p": 3.0, "overhead": {"graph_us": 2.0, "eager_us": 4.0},
                  "matmul": {"bf16": {"peak_TFLOPS": 720.0, "flops_half": 1e9,
                                      "wave": {"tile_m": 128, "tile_n": 256, "slots": 132}}},
                  "fit_error": {"matmul": {"n": 3, "median": 0.01, "worst": 0.02},
                                "meets_target": True},
                  "gemv_best_provider": [{"dtype": "bf16", "provider": "triton", "k": 4096,
                                          "n": 4096, "batch": 1, "bw_GBps": 2800.0}],
                  "notes": ["a note"], "undetermined": []}
    p["interconnect"] = {"allreduce": {"2": {"alpha_us": 10.0, "busbw_GBps": 350.0,
                                             "status": "verified"}},
                         "host_link_GBps": {"h2d": 50.0, "latency_us": {"h2d": 8.0}}}
    p["datasheet"] = {"name": "Test", "memory_bandwidth_GBps": 3350.0,
                      "matmul_TFLOPS": {"bf16": 989.4}}
    p["warnings"] = ["w"]
    p["waived"] = [{"probe": "matmul", "reason": "FP8 needs sm_89+"}]
    p["records"] = [{"probe": "hbm", "status": "ok", "validated": True, "size_bytes": 2**30,
                     "time_ms_median": 0.5, "bw_GBps": 2900.0}]
    return p


def test_a_full_profile_passes_the_value_checks(tmp_path):
    loaded = load_profile(save_profile(full_profile(), tmp_path / "p.json"))
    assert loaded["model"]["matmul"]["bf16"]["wave"]["slots"] == 132


def _set(path, value):
    """A mutation setting the value at a dotted path ('records.0.bw_GBps')."""
    def mutate(p):
        keys = path.split(".")
        node = p
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


@pytest.mark.parametrize("path, value, message", [
    ("ceilings.memory_bandwidth_GBps.copy", NAN,
     "'ceilings.memory_bandwidth_GBps.copy' is NaN"),
    ("ceilings.memory_bandwidth_GBps.copy", -5, "'ceilings.memory_bandwidth_GBps.copy' is neg"),
    ("ceilings.memory_bandwidth_GBps.copy", float("inf"), "is infinite"),
    ("ceilings.memory_bandwidth_GBps.copy", 2e6, "2e+06 GB/s, above the physical limit 1e+06 GB/s"),
    ("ceilings.memory_bandwidth_GBps.copy", True, "is true (a boolean), not a number"),
    ("ceilings.memory_bandwidth_GBps.copy", [3000], "is a list, not a number"),
    ("ceilings.matmul_TFLOPS.bf16", 2e5, "'ceilings.matmul_TFLOPS.bf16' is 200000 TFLOP/s, above"),
    ("ceilings.matmul_TFLOPS", [700.0], "'ceilings.matmul_TFLOPS' is a list, not an object"),
    ("ceilings.memory_bandwidth_detail.copy.status", "great",
     "'ceilings.memory_bandwidth_detail.copy.status' is 'great', not one of verified"),
    ("ceilings.memory_bandwidth_detail.copy.spread.samples_p20_p80", "x", "spread.samples_p20_p80"),
    ("ceilings.matmul_detail.bf16.m", 1.5, "'ceilings.matmul_detail.bf16.m' is 1.5, not a whole"),
    ("ceilings.matmul_detail.bf16", 5, "'ceilings.matmul_detail.bf16' is a number (5), not an obj"),
    ("provenance.device.memory_bytes", 1e30, "above the physical limit 64 TiB"),
    ("provenance.device.memory_bytes", "80GB", "'provenance.device.memory_bytes' is a string"),
    ("provenance.device.memory_bytes", None, "'provenance.device.memory_bytes' is missing"),
    ("model.bandwidth_GBps", NAN, "'model.bandwidth_GBps' is NaN"),
    ("model.latency_floor_us", -1.0, "'model.latency_floor_us' is negative"),
    ("model.overhead_us", "2us", "'model.overhead_us' is a string"),
    ("model.overlap_p", 0.5, "'model.overlap_p' is 0.5, below its minimum 1"),
    ("model.matmul.bf16.peak_TFLOPS", 1e30, "'model.matmul.bf16.peak_TFLOPS' is 1e+30 TFLOP/s"),
    ("model.matmul.bf16.flops_half", -1e9, "'model.matmul.bf16.flops_half' is negative"),
    ("model.matmul.bf16.wave.slots", 0, "'model.matmul.bf16.wave.slots' is 0, below its minimum"),
    ("model.matmul.bf16", [], "'model.matmul.bf16' is a list, not an object"),
    ("model.fit_error.matmul.worst", None, "'model.fit_error.matmul.worst' is missing"),
    ("model.gemv_best_provider.0.batch", "one", "'model.gemv_best_provider[0].batch' is a string"),
    ("model.gemv_best_provider", {}, "'model.gemv_best_provider' is an object, not a list"),
    ("model.notes", "a note", "'model.notes' is a string ('a note'), not a list"),
    ("interconnect.allreduce.2.alpha_us", NAN, "'interconnect.allreduce.2.alpha_us' is NaN"),
    ("interconnect.allreduce.2.busbw_GBps", -350.0, "'interconnect.allreduce.2.busbw_GBps' is neg"),
    ("interconnect.allreduce.two", {"busbw_GBps": 1.0}, "not keyed by a world size"),
    ("interconnect.host_link_GBps.h2d", "fast", "'interconnect.host_link_GBps.h2d' is a string"),
    ("interconnect.host_link_GBps.latency_us", [8.0], "latency_us' is a list, not an object"),
    ("datasheet.memory_bandwidth_GBps", NAN, "'datasheet.memory_bandwidth_GBps' is NaN"),
    ("datasheet.matmul_TFLOPS.bf16", -989.4, "'datasheet.matmul_TFLOPS.bf16' is negative"),
    ("warnings", {"w": 1}, "'warnings' is an object, not a list"),
    ("warnings.0", 5, "'warnings[0]' is a number (5), not a string"),
    ("waived.0", "FP8", "'waived[0]' is a string ('FP8'), not an object"),
    ("records.0.bw_GBps", NAN, "'records[0].bw_GBps' is NaN"),
    ("records.0.probe", ["hbm"], "'records[0].probe' is a list, not a string"),
    ("records.0", None, "'records[0]' is missing"),
    ("complete", "yes", "'complete' is a string ('yes'), not true or false"),
    ("schema_version", True, "'schema_version' missing or not an integer"),
])
def test_values_are_checked_and_the_error_names_the_field(tmp_path, path, value, message):
    p = full_profile()
    _set(path, value)(p)
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(p))  # NaN and Infinity as JSON literals, as other tools write them
    with pytest.raises(ProfileError) as exc:
        load_profile(bad)
    text = str(exc.value)
    assert text.startswith(f"malformed profile ({bad}): ") and "\n" not in text
    assert message in text


def _per_dtype_profile():
    """full_profile with fp32 streaming at its own bandwidth beside the bf16 reference."""
    p = full_profile()
    p["model"]["matmul"]["fp32"] = {"peak_TFLOPS": 40.0, "flops_half": 1e8,
                                    "bandwidth_GBps": 1400.0}
    p["model"]["bandwidth"] = {"source": "gemv", "fitted": True, "reference_dtype": "bf16",
                               "per_dtype_GBps": {"bf16": 2900.0, "fp32": 1400.0},
                               "per_dtype_tried": ["fp32"]}
    return p


def test_a_per_dtype_bandwidth_passes_the_checks(tmp_path):
    loaded = load_profile(save_profile(_per_dtype_profile(), tmp_path / "p.json"))
    assert loaded["model"]["matmul"]["fp32"]["bandwidth_GBps"] == 1400.0


@pytest.mark.parametrize("path, value, message", [
    ("model.matmul.fp32.bandwidth_GBps", "fast",
     "'model.matmul.fp32.bandwidth_GBps' is a string ('fast'), not a number"),
    ("model.matmul.fp32.bandwidth_GBps", NAN, "'model.matmul.fp32.bandwidth_GBps' is NaN"),
    ("model.matmul.fp32.bandwidth_GBps", -1.0, "'model.matmul.fp32.bandwidth_GBps' is negative"),
    ("model.matmul.fp32.bandwidth_GBps", 0,
     "'model.matmul.fp32.bandwidth_GBps' is 0, below its minimum 0 (must be positive)"),
    ("model.matmul.fp32.bandwidth_GBps", 2e9,
     "'model.matmul.fp32.bandwidth_GBps' is 2e+09 GB/s, above the physical limit 1e+06 GB/s"),
    ("model.bandwidth.per_dtype_GBps.fp32", True,
     "'model.bandwidth.per_dtype_GBps.fp32' is true (a boolean), not a number"),
    ("model.bandwidth.reference_dtype", 16, "'model.bandwidth.reference_dtype' is a number (16)"),
    ("model.bandwidth.per_dtype_tried", "fp32",
     "'model.bandwidth.per_dtype_tried' is a string ('fp32'), not a list"),
])
def test_a_malformed_per_dtype_bandwidth_is_one_line_naming_it(tmp_path, path, value, message):
    p = _per_dtype_profile()
    _set(path, value)(p)
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(p))
    with pytest.raises(ProfileError) as exc:
        load_profile(bad)
    text = str(exc.value)
    assert text.startswith(f"malformed profile ({bad}): ") and "\n" not in text
    assert message in text


def test_null_is_allowed_where_documented_optional(tmp_path):
    # ridgeline writes NaN as null; a null ceiling or fitted term loads, the readers handle it
    p = full_profile()
    p["ceilings"]["memory_bandwidth_GBps"]["copy"] = float("nan")
    p["model"]["overlap_p"] = None
    p["model"]["matmul"]["bf16"]["flops_half"] = None
    p["interconnect"]["allreduce"]["2"]["alpha_us"] = None
    loaded = load_profile(save_profile(p, tmp_path / "p.json"))
    assert loaded["ceilings"]["memory_bandwidth_GBps"]["copy"] is None


def test_a_null_ceiling_the_planner_needs_is_one_clear_error():
    from ridgeline.roofline.model import RooflineModel

    p = full_profile()
    p["model"] = {}
    p["ceilings"]["memory_bandwidth_GBps"]["copy"] = None
    with pytest.raises(ProfileError, match="no memory bandwidth ceiling to plan with"):
        RooflineModel.from_profile(p)
    # a fitted model without any peak falls back to the ceilings, and says so
    p = full_profile()
    p["model"]["matmul"]["bf16"]["peak_TFLOPS"] = None
    model = RooflineModel.from_profile(p)
    assert model.peak_TFLOPS == {"bf16": 700.0} and "lacks" in model.notes[0]


def test_bundled_datasheet_profiles_pass_the_checks():
    from ridgeline import datasheets
    from ridgeline.roofline.profile import validate_profile
    from ridgeline.sizing.hardware import datasheet_profile

    for entry in datasheets.load_datasheets():
        validate_profile(datasheet_profile(entry), where=entry["sku"])


@pytest.mark.parametrize("name, text", [
    ("records.partial.jsonl", '{"probe": "hbm", "bw_GBps": 1.0}\n{"probe": "hbm"}\n'),
    ("records.partial.jsonl", ""),                       # killed before the first record
    ("profile.json", '{"probe": "hbm"}\n{"probe": "matmul"}\n'),  # JSON lines by another name
])
def test_partial_records_of_a_killed_run_say_how_to_resume(tmp_path, name, text):
    path = tmp_path / "run" / name
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert "partial records of an interrupted run" in msg and "\n" not in msg
    assert f"ridgeline profile --resume {tmp_path / 'run'}" in msg


def test_empty_file_and_folder(tmp_path):
    (tmp_path / "p.json").write_text("")
    with pytest.raises(ProfileError, match="is empty"):
        load_profile(tmp_path / "p.json")
    with pytest.raises(ProfileError, match="is a folder"):
        load_profile(tmp_path)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(tmp_path / "x.json")
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "missing.json")


def _hbm(kernel, provider, size, bw, status="ok"):
    return {"probe": "hbm", "kernel": kernel, "provider": provider, "size_bytes": size,
            "bw_GBps": bw, "status": status, "validated": status == "ok"}


def test_ceilings_take_the_verified_plateau_and_the_best_verified_provider():
    mib = 2**20
    records = [
        _hbm("copy", "torch", 25 * mib, 9000.0),        # cache-resident: ignored
        _hbm("copy", "torch", 256 * mib, 2950.0),
        _hbm("copy", "torch", 512 * mib, 3000.0),
        _hbm("copy", "torch", 1024 * mib, 3050.0),
        _hbm("copy", "triton", 512 * mib, 3100.0),      # one plateau-sized point: unverified
        _hbm("copy", "triton", 1024 * mib, 99999.0, status="invalid"),  # never fitted
        {"probe": "matmul", "dtype": "bf16", "m": 8192, "n": 8192, "k": 8192, "TFLOPS": 790.0,
         "status": "ok", "validated": True, "provider": "torch"},
        {"probe": "matmul", "dtype": "bf16", "m": 1, "n": 4096, "k": 4096, "TFLOPS": 2.0,
         "status": "ok", "validated": True, "provider": "torch"},
    ]
    c = fit_ceilings(records, DEVICE, {"memory_bandwidth_GBps": 2990, "matmul_TFLOPS": {"bf16": 989}})
    copy = c["memory_bandwidth_detail"]["copy"]
    # the verified torch plateau wins over a higher single triton point
    assert c["memory_bandwidth_GBps"]["copy"] == 3000.0 and copy["provider"] == "torch"
    assert copy["status"] == "verified" and copy["reason"] is None
    assert copy["plateau_sizes_bytes"] == [256 * mib, 512 * mib, 1024 * mib]
    assert copy["spread"]["across_points"] == pytest.approx(100 / 3000)
    assert copy["per_provider_GBps"]["triton"] == 3100.0
    assert copy["per_provider_status"] == {"torch": "verified", "triton": "unverified"}
    assert c["matmul_TFLOPS"]["bf16"] == 790.0 and c["matmul_detail"]["bf16"]["m"] == 8192
    # one shape at the peak, the other at 0.3% of it: a peak of one shape, and it says so
    assert c["matmul_detail"]["bf16"]["status"] == "unverified"
    assert "peak from one shape (M=8192 N=8192 K=8192)" in c["matmul_detail"]["bf16"]["reason"]
    assert any("exceeds the datasheet" in f for f in c["flags"])  # 3000 > 2990: flagged
