"""roofline/sections.py: the typed reader/writer of a profile's ceilings and model sections."""

import json
import subprocess
import sys

from ridgeline import datasheets
from ridgeline.roofline.model import DEFAULT_LATENCY_FLOOR_US, RooflineModel
from ridgeline.roofline.profile import validate_profile
from ridgeline.roofline.profile_fit import fit_profile
from ridgeline.roofline.sections import Ceilings, ModelSection
from ridgeline.sizing.hardware import datasheet_profile
from test_reports import make_profile


def _dumps(value):
    return json.dumps(value, indent=1)


def test_a_fitted_profile_round_trips_key_for_key():
    profile = fit_profile(make_profile())
    ceil = Ceilings.of(profile)
    assert _dumps(ceil.to_dict()) == _dumps(profile["ceilings"])  # same keys, same order
    assert ceil.bandwidth_GBps["read"] == profile["ceilings"]["memory_bandwidth_GBps"]["read"]
    assert ceil.bandwidth_detail_of("copy")["provider"] in ("torch", "triton")
    assert ceil.plateau_rule and ceil.flags is not None and ceil.extra == {}
    model = ModelSection.of(profile)
    assert _dumps(model.to_dict()) == _dumps(profile["model"])
    assert model.source == "measured" and model.bandwidth_GBps > 0
    assert set(model.peaks_TFLOPS()) == {"bf16", "fp32"}


def test_the_datasheet_profile_is_written_by_the_same_writers():
    entry = datasheets.by_sku("h100-sxm") or datasheets.load_datasheets()[0]
    prof = datasheet_profile(dict(entry), derate=False)  # the vendor's figures, as written
    bw = float(entry["memory_bandwidth_GBps"])
    peaks = {d: float(v) for d, v in entry["matmul_TFLOPS"].items() if v}
    assert prof["ceilings"] == {"memory_bandwidth_GBps": {"read": bw}, "matmul_TFLOPS": peaks}
    # MODEL_KEYS order, the same as a fitted model's
    assert list(prof["model"]) == ["source", "bandwidth_GBps", "latency_floor_us", "overlap_p",
                                 "matmul", "notes"]
    assert prof["model"]["overlap_p"] is None  # a datasheet roofline is max(t_mem, t_comp)
    assert prof["model"]["matmul"]["bf16"] == {"peak_TFLOPS": peaks["bf16"], "flops_half": 0.0}
    assert _dumps(Ceilings.of(prof).to_dict()) == _dumps(prof["ceilings"])
    model = ModelSection.of(prof)
    assert _dumps(model.to_dict()) == _dumps(prof["model"])
    assert (model.source, model.latency_floor_us) == ("datasheet", DEFAULT_LATENCY_FLOOR_US)
    assert RooflineModel.from_profile(prof).bandwidth_GBps == bw
    validate_profile(json.loads(json.dumps(prof)), where="datasheet profile")


def test_optional_fields_may_be_null_or_missing():
    assert Ceilings.of({}).to_dict() == {"memory_bandwidth_GBps": {}, "matmul_TFLOPS": {}}
    assert Ceilings.of({"ceilings": None}).first_bandwidth_GBps() is None
    ceil = Ceilings.of({"ceilings": {"memory_bandwidth_GBps": {"read": None, "copy": 900},
                                     "memory_bandwidth_detail": None,
                                     "matmul_TFLOPS": {"bf16": None},
                                     "matmul_detail": {"bf16": None}, "flags": None}})
    assert ceil.first_bandwidth_GBps() == 900.0
    assert ceil.bandwidth_detail_of("read") == {} and ceil.matmul_detail_of("bf16") == {}
    assert ceil.matmul_TFLOPS == {"bf16": None}
    model = ModelSection.of({"model": {"bandwidth_GBps": None, "matmul": None,
                                       "latency_floor_us": None, "overlap_p": None,
                                       "notes": None, "source": None}})
    assert model.peaks_TFLOPS() == {} and model.matmul == {} and model.notes is None
    assert model.to_dict()["matmul"] is None  # a null is written back as null
    no_peak = ModelSection.of({"model": {"matmul": {"bf16": {"peak_TFLOPS": None}}}})
    assert no_peak.peaks_TFLOPS() == {}
    assert ModelSection.of({}).to_dict() == {}


def test_the_module_needs_no_torch():
    code = ("import sys, ridgeline.roofline.sections; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_per_dtype_bandwidths_are_read_where_a_peak_stands_beside_them():
    section = {"bandwidth_GBps": 3000.0, "overlap_p": None,
               "bandwidth": {"reference_dtype": "bf16"},
               "matmul": {"bf16": {"peak_TFLOPS": 700.0},
                          "fp32": {"peak_TFLOPS": 60.0, "bandwidth_GBps": 1500},
                          "fp16": {"peak_TFLOPS": 600.0, "bandwidth_GBps": 0.0},
                          "fp8_e4m3": {"peak_TFLOPS": None, "bandwidth_GBps": 900.0}}}
    model = ModelSection.of({"model": section})
    assert model.own_bandwidths_GBps() == {"fp32": 1500.0}
    assert _dumps(model.to_dict()) == _dumps(section)  # stored as written
    assert ModelSection.of({}).own_bandwidths_GBps() == {}
