"""reports.fleet: finding profiles, the median/ratio/spread per quantity, the gate, the device
flags (PCIe, throttling, trust, model/driver) and the written fleet.json, charts and HTML."""

import copy
import json
from pathlib import Path

import pytest

from profile_fixtures import NOISY, synthetic_profile
from ridgeline.errors import ProfileError
from ridgeline.outputs import OutputError
from ridgeline.reports.fleet import (Fleet, Member, fleet_summary, find_profiles, identity,
                                     identity_text, load_fleet, write_fleet)
from ridgeline.roofline.profile import load_profile


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One synthetic H100 profile as a dict (every ceiling verified)."""
    return load_profile(synthetic_profile(tmp_path_factory.mktemp("base") / "profile.json"))


def device(base, host="node0", index=0, **changes):
    """A copy of `base` as measured on host/cuda:index, with `changes` applied by path."""
    p = copy.deepcopy(base)
    p["provenance"]["hostname"] = host
    dev = p["provenance"]["device"]
    dev["id"], dev["pci_bus_id"] = f"cuda:{index}", f"0000:{0x18 + index:02x}:00.0"
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = p
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return p


def fleet_of(*profiles, reference=None):
    members = [Member(f"dev{i}", Path(f"dev{i}/profile.json"), p)
               for i, p in enumerate(profiles)]
    ref = Member("ref", Path("ref.json"), reference) if reference else None
    return Fleet(members, ref)


def row(result, name):
    return next(r for r in result["quantities"] if r["quantity"] == name)


def entry(result, name, label):
    return next(e for e in row(result, name)["values"] if e["device"] == label)


def test_one_slow_device_is_named_and_fails(base):
    slow = device(base, index=2, **{"ceilings.memory_bandwidth_GBps.read": 3000.0 * 0.8})
    result = fleet_summary(fleet_of(device(base), device(base, index=1), slow,
                                    device(base, index=3)))
    read = row(result, "read bandwidth")
    assert read["median"] == 3000.0 and read["n"] == 4
    assert read["spread"] == pytest.approx(0.2)
    assert entry(result, "read bandwidth", "dev2")["ratio"] == pytest.approx(0.8)
    assert entry(result, "read bandwidth", "dev2")["flag"] == "worse"
    assert entry(result, "read bandwidth", "dev0")["ratio"] == 1.0
    assert result["failed_devices"] == ["dev2"] and result["exit_code"] == 1
    dev2 = result["devices"][2]
    assert dev2["worse"] == [{"quantity": "read bandwidth", "ratio": pytest.approx(0.8)}]
    assert dev2["worst_ceiling"]["quantity"] == "read bandwidth"
    # within a wider threshold the same set passes
    assert fleet_summary(fleet_of(device(base), slow, device(base)), 0.25)["exit_code"] == 0


def test_identical_profiles_pass_with_no_spread(base):
    result = fleet_summary(fleet_of(device(base), device(base, index=1), device(base, "node1")))
    assert result["exit_code"] == 0 and result["failed_devices"] == []
    for r in result["quantities"]:
        assert r["spread"] == 0.0
        assert {e["ratio"] for e in r["values"]} == {1.0}, r["quantity"]
    names = {r["quantity"] for r in result["quantities"]}
    assert {"read bandwidth", "bf16 matmul", "model bandwidth", "model latency floor",
            "model bf16 peak", "allreduce n=8 busbw"} <= names
    assert result["set_flags"] == [] and all(d["flags"] == [] for d in result["devices"])


def test_faster_device_is_flagged_better_without_failing(base):
    fast = device(base, index=1, **{"ceilings.matmul_TFLOPS.bf16": 700.0 * 1.3})
    result = fleet_summary(fleet_of(device(base), fast, device(base, index=2)))
    assert entry(result, "bf16 matmul", "dev1")["flag"] == "better"
    assert result["exit_code"] == 0


def test_reference_replaces_the_median(base):
    ref = device(base, **{"ceilings.memory_bandwidth_GBps.read": 3500.0})
    result = fleet_summary(fleet_of(device(base), device(base, index=1), reference=ref))
    assert result["basis"] == "reference"
    read = row(result, "read bandwidth")
    assert read["reference"] == 3500.0 and read["median"] == 3000.0
    assert entry(result, "read bandwidth", "dev0")["ratio"] == pytest.approx(3000 / 3500)
    assert result["failed_devices"] == ["dev0", "dev1"] and result["exit_code"] == 1
    # a quantity the reference lacks gets no ratio, and is said so
    del ref["ceilings"]["matmul_TFLOPS"]["fp8_e4m3"]
    result = fleet_summary(fleet_of(device(base), reference=ref), 0.2)
    assert entry(result, "fp8_e4m3 matmul", "dev0")["flag"] == "not in reference"
    assert result["exit_code"] == 0


def test_untrusted_ceilings_are_never_gated(base):
    noisy_slow = device(base, index=1, **{"ceilings.memory_bandwidth_GBps.read": 2400.0,
                                          "ceilings.memory_bandwidth_detail.read": dict(NOISY)})
    result = fleet_summary(fleet_of(device(base), noisy_slow, device(base, index=2)))
    e = entry(result, "read bandwidth", "dev1")
    assert e["flag"] == "unverified" and e["deviation"] == "worse" and e["status"] == "noisy"
    assert result["exit_code"] == 0
    assert result["not_gated"] == [{"device": "dev1", "quantity": "read bandwidth",
                                    "untrusted": "noisy", "deviation": "worse"}]
    assert "noisy: read bandwidth" in result["devices"][1]["flags"]
    # an untrusted reference ceiling gates no device
    ref = device(base, **{"ceilings.memory_bandwidth_GBps.read": 5000.0,
                          "ceilings.memory_bandwidth_detail.read": dict(NOISY)})
    by_ref = fleet_summary(fleet_of(device(base), reference=ref))
    assert entry(by_ref, "read bandwidth", "dev0")["untrusted"] == "reference noisy"
    assert by_ref["exit_code"] == 0


def test_fitted_parameters_are_flagged_not_gated(base):
    slow_fit = device(base, index=1, **{"model.latency_floor_us": 6.0})
    result = fleet_summary(fleet_of(device(base), slow_fit, device(base, index=2)))
    e = entry(result, "model latency floor", "dev1")
    assert e["ratio"] == 2.0 and e["flag"] == "worse"       # higher latency is worse
    assert row(result, "model latency floor")["kind"] == "fitted"
    assert result["exit_code"] == 0


def test_device_flags_pcie_throttle_incomplete_missing(base):
    narrow = device(base, index=1, **{"provenance.device.telemetry": {
        "pcie_width_current": 8, "pcie_width_max": 16, "pcie_gen_current": 5,
        "pcie_gen_max": 5}})
    # the topology's entry for this PCI id, active (P0) and at a lower generation
    slow_gen = device(base, index=2, **{"interconnect.topology": {"gpus": [
        {"index": 0, "pci_bus_id": "00000000:1A:00.0",
         "pcie": {"gen_current": 3, "gen_max": 5, "width_current": 16, "width_max": 16,
                  "pstate": 0}}]}})
    hot = device(base, index=3, throttled=True)
    hot["records"] = [{"probe": "hbm", "throttled": True,
                       "throttle_reasons": "gpu_idle,hw_thermal_slowdown"}]
    partial = device(base, index=4, complete=False, incomplete_reason="interrupted (Ctrl-C)")
    del partial["ceilings"]["matmul_TFLOPS"]["fp8_e4m3"]
    result = fleet_summary(fleet_of(device(base), narrow, slow_gen, hot, partial))
    flags = {d["label"]: " | ".join(d["flags"]) for d in result["devices"]}
    assert flags["dev0"] == ""
    assert "PCIe link trained at x8, below its max x16" in flags["dev1"]
    assert "PCIe link at Gen3, below its max Gen5 while active" in flags["dev2"]
    assert "throttled during the run (1 record(s): hw_thermal_slowdown)" in flags["dev3"]
    assert "incomplete: interrupted (Ctrl-C)" in flags["dev4"]
    assert "missing: fp8_e4m3 matmul" in flags["dev4"]
    assert entry(result, "fp8_e4m3 matmul", "dev4")["flag"] == "missing"
    assert result["exit_code"] == 0   # flags inform; only slow ceilings fail


def test_different_model_and_driver_are_flagged(base):
    a = device(base, **{"provenance.device.driver_version": "550.54"})
    b = device(base, index=1, **{"provenance.device.driver_version": "550.54"})
    c = device(base, index=2, **{"provenance.device.driver_version": "535.1",
                                 "provenance.device.name": "NVIDIA H100 PCIe"})
    result = fleet_summary(fleet_of(a, b, c))
    assert ("different driver in the set: 550.54 (2 devices), 535.1 (1 device)"
            in result["set_flags"])
    assert any(f.startswith("different device model in the set") for f in result["set_flags"])
    assert "driver 535.1, unlike the set's 550.54" in result["devices"][2]["flags"]
    assert result["devices"][0]["flags"] == []


def test_identity_names_host_index_pci_and_uuid(base):
    p = device(base, "gpu-node-7", 3, **{"provenance.device.telemetry": {"uuid": "GPU-1234"}})
    ident = identity(p)
    assert (ident["host"], ident["device_id"], ident["device_index"]) == ("gpu-node-7", "cuda:3", 3)
    assert ident["pci_bus_id"] == "0000:1b:00.0" and ident["uuid"] == "GPU-1234"
    assert identity_text(ident) == "gpu-node-7 cuda:3, PCI 0000:1b:00.0, UUID GPU-1234"


def test_find_profiles_searches_folders_and_labels_them(tmp_path):
    run = tmp_path / "run"
    for name in ("hostA-0", "hostA-1", "hostB-0"):
        synthetic_profile(run / name / "profile.json")
    (run / "hostB-1").mkdir()
    (run / "hostB-1" / "records.partial.jsonl").write_text("{}\n")
    loose = synthetic_profile(tmp_path / "by-hand" / "gpu9.json")
    found, notes = find_profiles([run, loose, run / "hostA-0" / "profile.json"])
    assert [label for _, label in found] == ["hostA-0", "hostA-1", "hostB-0", str(loose)]
    assert len(notes) == 1 and "hostB-1 holds an unfinished run" in notes[0]
    # two folders with the same layout: labels fall back to the paths
    synthetic_profile(tmp_path / "run2" / "hostA-0" / "profile.json")
    found, _ = find_profiles([run, tmp_path / "run2"])
    assert [label for _, label in found][-1] == str(tmp_path / "run2" / "hostA-0" / "profile.json")
    with pytest.raises(ProfileError, match="no profile.json under"):
        find_profiles([tmp_path / "run" / "hostB-1"])
    with pytest.raises(ProfileError, match="not found"):
        find_profiles([tmp_path / "nowhere"])


def test_load_fleet_rejects_a_malformed_profile(tmp_path):
    synthetic_profile(tmp_path / "a" / "profile.json")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "profile.json").write_text('{"kind": "ridgeline-profile"}')
    with pytest.raises(ProfileError, match="malformed profile"):
        load_fleet([tmp_path])


def test_write_fleet_files_and_replaces_only_its_charts(base, tmp_path):
    slow = device(base, index=1, **{"ceilings.memory_bandwidth_GBps.read": 2000.0})
    result = fleet_summary(fleet_of(device(base), slow, device(base, index=2)))
    out = tmp_path / "out"
    paths = write_fleet(result, out)
    names = {p.name for p in paths}
    assert {"fleet.json", "fleet.html", "fleet_read_bandwidth.png",
            "fleet_bf16_matmul.png"} <= names
    stored = json.loads((out / "fleet.json").read_text())
    assert stored["kind"] == "ridgeline-fleet" and stored["failed_devices"] == ["dev1"]
    assert sorted(stored["figures"]) == sorted(n for n in names if n.endswith(".png"))
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in stored["figures"])
    page = (out / "fleet.html").read_text()
    assert "WARNING" in page and "dev1 (read bandwidth 0.667)" in page
    assert page.count("data:image/png;base64,") == len(stored["figures"])
    # a second run without the fp8 ceilings removes that chart, never a file not ours
    (out / "fleet_mine.png").write_bytes(b"x")
    lean = copy.deepcopy(base)
    del lean["ceilings"]["matmul_TFLOPS"]["fp8_e4m3"]
    del lean["model"]["matmul"]["fp8_e4m3"]
    write_fleet(fleet_summary(fleet_of(lean, lean)), out)
    assert not (out / "fleet_fp8_e4m3_matmul.png").exists()
    assert (out / "fleet_bf16_matmul.png").exists() and (out / "fleet_mine.png").exists()
    with pytest.raises(OutputError, match="is a file"):
        write_fleet(result, out / "fleet.json")
