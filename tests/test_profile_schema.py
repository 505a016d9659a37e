"""Profile file: save/load round trip, schema validation, clear errors."""

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
    (lambda p: p["ceilings"]["memory_bandwidth_GBps"].update(copy="fast"), "non-negative"),
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
        _hbm("copy", "torch", 200 * mib, 2950.0),
        _hbm("copy", "torch", 400 * mib, 3000.0),
        _hbm("copy", "torch", 800 * mib, 3050.0),
        _hbm("copy", "triton", 400 * mib, 3100.0),      # one plateau-sized point: unverified
        _hbm("copy", "triton", 800 * mib, 99999.0, status="invalid"),  # never fitted
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
    assert copy["plateau_sizes_bytes"] == [200 * mib, 400 * mib, 800 * mib]
    assert copy["spread"]["across_points"] == pytest.approx(100 / 3000)
    assert copy["per_provider_GBps"]["triton"] == 3100.0
    assert copy["per_provider_status"] == {"torch": "verified", "triton": "unverified"}
    assert c["matmul_TFLOPS"]["bf16"] == 790.0 and c["matmul_detail"]["bf16"]["m"] == 8192
    # one shape at the peak, the other at 0.3% of it: a peak of one shape, and it says so
    assert c["matmul_detail"]["bf16"]["status"] == "unverified"
    assert "peak from one shape (M=8192 N=8192 K=8192)" in c["matmul_detail"]["bf16"]["reason"]
    assert any("exceeds the datasheet" in f for f in c["flags"])  # 3000 > 2990: flagged
