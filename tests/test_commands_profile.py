"""The CLI end to end on the CPU device, and its error handling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ridgeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_devices_lists_the_cpu_as_json(capsys):
    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    cpu = devices[-1]
    assert cpu["id"] == "cpu" and cpu["memory_bytes"] > 0 and cpu["dtypes"]["fp32"]


def test_unknown_device_and_probe_are_one_line_errors(capsys, tmp_path):
    assert main(["profile", "--device", "tpu:0", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device" in err[0]
    assert main(["profile", "--device", "cpu", "--probes", "hbm,warp", "-o", str(tmp_path)]) == 2
    assert "unknown probe" in capsys.readouterr().err


def test_profile_cuda_without_gpu_says_so(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["profile", "--device", "cuda:0", "-o", str(tmp_path)]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_cpu_profile_end_to_end(tmp_path):
    """The CI profile: every default probe, on the CPU, through the installed entry point."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ridgeline", "profile", "--device", "cpu",
                           "--quick", "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    profile = json.loads((out / "profile.json").read_text())
    assert profile["complete"] is True
    assert profile["provenance"]["device"]["kind"] == "cpu"
    assert set(profile["ceilings"]["memory_bandwidth_GBps"]) >= {"copy", "read", "write", "triad"}
    assert "fp32" in profile["ceilings"]["matmul_TFLOPS"]
    assert (out / "records.csv").exists()
    assert "copy bandwidth" in proc.stdout


# ---------------------------------------------------------------- outputs never lose data

import errno  # noqa: E402
import fcntl  # noqa: E402
import os  # noqa: E402

from ridgeline.probes.base import Case, Probe  # noqa: E402

N_CASES = 5


class CountingProbe(Probe):
    """A five-case 'hbm' sweep that counts its runs and can be killed or interrupted."""

    name = "hbm"

    def __init__(self, stop_at=None, stop_with=SystemExit):
        self.calls = []
        self.stop_at, self.stop_with = stop_at, stop_with

    def cases(self, ctx):
        return [Case({"i": i}) for i in range(N_CASES)]

    def run(self, case, ctx):
        self.calls.append(case["i"])
        if case["i"] == self.stop_at:
            raise self.stop_with()  # SystemExit: the process dies here, like a kill
        return [{"probe": "hbm", "kernel": "copy", "provider": "torch", "size_bytes": 10**9,
                 "bw_GBps": 100.0, "status": "ok", "validated": True, "i": case["i"]}]


@pytest.fixture
def probe(monkeypatch):
    p = CountingProbe()
    monkeypatch.setattr("ridgeline.runner.get_probe", lambda name: p)
    return p


def old_profile(folder, complete=True):
    from ridgeline.device import cpu_device
    from ridgeline.roofline.profile import new_profile, save_profile

    prof = new_profile(cpu_device().to_dict(), command_line=["old"], versions={},
                       sweep={"probes": ["hbm"], "quick": False, "options": {}})
    prof["complete"] = complete
    prof["provenance"]["timestamp_utc"] = "2020-01-01T00:00:00+00:00"
    return save_profile(prof, folder / "profile.json")


def err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def no_device(monkeypatch):
    """Fails the test if the command touches the device: outputs are checked first."""
    def touched(*a, **k):
        raise AssertionError("the device was detected before the output folder was checked")

    monkeypatch.setattr("ridgeline.device.get_device", touched)


@pytest.mark.parametrize("make,needle", [
    (lambda t: (t / "out.json").write_text("x") and t / "out.json", "is a file"),
    (lambda t: Path("/proc/ridgeline-x"), "cannot create the output folder /proc/ridgeline-x"),
    (lambda t: (t / "f").write_text("x") and t / "f" / "sub", "Not a directory"),
])
def test_an_unusable_output_is_one_line_before_the_device(tmp_path, capsys, no_device, make,
                                                          needle):
    assert main(["profile", "--device", "cpu", "-o", str(make(tmp_path))]) == 2
    line = err_line(capsys)
    assert line.startswith("ridgeline profile: error:") and needle in line


def test_a_profile_is_not_replaced_without_force(tmp_path, capsys, no_device):
    before = old_profile(tmp_path).read_text()
    assert main(["profile", "--device", "cpu", "-o", str(tmp_path)]) == 2
    line = err_line(capsys)
    assert "already holds a profile" in line and "2020-01-01" in line and "--force" in line
    assert (tmp_path / "profile.json").read_text() == before


def test_force_replaces_the_profile_and_removes_its_stale_files(tmp_path, probe, capsys):
    old_profile(tmp_path)
    for name in ("report.md", "roofline.png", "validation.json", "notes.txt"):
        (tmp_path / name).write_text("old")
    rc = main(["profile", "--device", "cpu", "--probes", "hbm", "--no-report", "--force",
               "-o", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    prof = json.loads((tmp_path / "profile.json").read_text())
    assert prof["provenance"]["timestamp_utc"] != "2020-01-01T00:00:00+00:00"
    assert [r["i"] for r in prof["records"]] == list(range(N_CASES))
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"profile.json", "records.csv", "notes.txt", ".ridgeline.lock"}


def test_a_second_writer_is_refused_at_once(tmp_path, capsys, probe):
    fd = os.open(tmp_path / ".ridgeline.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run, mid-measurement
        os.write(fd, b"4242\n")
        assert main(["profile", "--device", "cpu", "--probes", "hbm", "-o", str(tmp_path)]) == 2
        assert "in use by another ridgeline run (PID 4242" in err_line(capsys)
        assert probe.calls == []
        assert main(["profile", "--resume", str(tmp_path)]) == 2  # resume takes the lock too
        assert "PID 4242" in err_line(capsys)
    finally:
        os.close(fd)


def test_a_full_disk_is_one_line_pointing_at_resume(tmp_path, capsys, monkeypatch):
    def full(device, probes, *, out_dir, **kw):
        (out_dir / "records.partial.jsonl").write_text('{"probe": "hbm"}\n')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "profile.json"))

    monkeypatch.setattr("ridgeline.runner.run_profile", full)
    assert main(["profile", "--device", "cpu", "--probes", "hbm", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after the "profiling ..." line
    assert line.startswith("ridgeline profile: error: ")
    assert f"cannot write {tmp_path / 'profile.json'}: No space left on device" in line
    assert f"ridgeline profile --resume {tmp_path}" in line


def fake_profile(**fields):
    from ridgeline.device import cpu_device
    from ridgeline.roofline.profile import new_profile

    prof = new_profile(cpu_device().to_dict(), versions={})
    prof.update(complete=True, incomplete_reason=None, unusable_probes=[])
    prof.update(fields)
    return prof


@pytest.mark.parametrize("fields,rc,needle", [
    ({}, 0, None),
    ({"complete": False, "incomplete_reason": "interrupted by the user after 2 of 9 cases"},
     130, "--resume"),
    ({"complete": False, "incomplete_reason": "1 hbm case(s) failed"}, 1, "--resume"),
    ({"complete": False, "incomplete_reason": "gemv produced no usable record",
      "unusable_probes": ["gemv"]}, 1, "no usable record from gemv"),
])
def test_exit_status_says_how_the_run_ended(tmp_path, capsys, monkeypatch, fields, rc, needle):
    monkeypatch.setattr("ridgeline.runner.run_profile",
                        lambda *a, **k: fake_profile(**fields))
    assert main(["profile", "--device", "cpu", "--probes", "hbm", "--no-report",
                 "-o", str(tmp_path)]) == rc
    out = capsys.readouterr()
    assert "Ceilings" not in out.out  # the summary is ceilings_table, titled by the device
    assert "ridgeline profile:" in out.out
    if needle:
        assert needle in out.err


# ---------------------------------------------------------------- --resume

def partial_log(folder, records, **header):
    from ridgeline.device import cpu_device

    head = {"kind": "ridgeline-partial", "device_id": "cpu", "device_name": cpu_device().name,
            "probes": ["hbm"], "quick": True, "options": {"hbm": {"sizes": [4096]}},
            "command_line": ["ridgeline", "profile", "--device", "cpu", "--quick"], **header}
    lines = [json.dumps(head)] + [json.dumps(r) for r in records]
    path = folder / "records.partial.jsonl"
    path.write_text("\n".join(lines) + '\n{"probe": "hbm", "i": 9, "stat')  # killed mid-line
    return path


def test_resume_reuses_the_recorded_settings_and_records(tmp_path, capsys, monkeypatch):
    records = [{"probe": "hbm", "i": 0, "status": "ok"},
               {"probe": "hbm", "i": 1, "status": "failed", "reason": "RuntimeError: x"}]
    partial_log(tmp_path, records)
    (tmp_path / "report.md").write_text("stale")
    (tmp_path / "roofline.png").write_text("stale")
    seen = {}

    def fake(device, probes, **kw):
        seen.update(kw, device=device.id, probes=probes)
        return fake_profile()

    monkeypatch.setattr("ridgeline.runner.run_profile", fake)
    assert main(["profile", "--resume", str(tmp_path)]) == 0
    assert seen["device"] == "cpu" and seen["probes"] == ["hbm"] and seen["quick"] is True
    assert seen["options"] == {"hbm": {"sizes": [4096]}}
    assert seen["resume_records"] == records  # the cut-off line is not among them
    assert seen["command_line"] == ["ridgeline", "profile", "--device", "cpu", "--quick"]
    assert seen["out_dir"] == tmp_path
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "1 record(s) kept" in err and "1 failed case(s) to retry" in err
    assert "1 unreadable line(s) skipped" in err
    for stale in ("report.md", "roofline.png"):  # removed, or replaced by the new report
        path = tmp_path / stale
        assert not path.exists() or path.read_bytes() != b"stale"
    assert (tmp_path / "records.partial.jsonl").exists()  # the runner's to replace, not ours


@pytest.mark.parametrize("argv,header,needle", [
    (["--probes", "matmul"], {}, "drop --probes"),
    (["--quick"], {"quick": False}, "drop --quick"),
    ([], {"device_name": "Some Other CPU"}, "resume it on the machine that started it"),
    (["--force"], {}, "use one or the other"),
    (["-o", "elsewhere"], {}, "drop -o"),
])
def test_resume_refuses_other_settings(tmp_path, capsys, monkeypatch, argv, header, needle):
    partial_log(tmp_path, [{"probe": "hbm", "i": 0, "status": "ok"}], **header)
    monkeypatch.setattr("ridgeline.runner.run_profile", lambda *a, **k: pytest.fail("measured"))
    assert main(["profile", "--resume", str(tmp_path), *argv]) == 2
    assert needle in err_line(capsys)


def test_resume_of_an_older_headerless_log_needs_the_probes(tmp_path, capsys, probe):
    (tmp_path / "records.partial.jsonl").write_text(
        json.dumps({"probe": "hbm", "kernel": "copy", "provider": "torch", "size_bytes": 10**9,
                    "bw_GBps": 100.0, "status": "ok", "validated": True, "i": 0}) + "\n")
    assert main(["profile", "--resume", str(tmp_path), "--no-report"]) == 2
    assert "give the run's --probes" in err_line(capsys)
    assert probe.calls == []
    rc = main(["profile", "--resume", str(tmp_path), "--no-report", "--probes", "hbm",
               "--device", "cpu"])
    assert rc == 0 and probe.calls == [1, 2, 3, 4]


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    assert main(["profile", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such folder" in err_line(capsys)
    assert main(["profile", "--resume", str(tmp_path)]) == 2
    assert "nothing to resume" in err_line(capsys)
    old_profile(tmp_path, complete=True)
    assert main(["profile", "--resume", str(tmp_path)]) == 0
    assert "is complete: nothing to resume" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("stop_with,first_rc", [(SystemExit, None), (KeyboardInterrupt, 130)])
def test_resume_measures_only_the_missing_cases(tmp_path, capsys, probe, stop_with, first_rc):
    """Killed (SystemExit: records.partial.jsonl left) or interrupted (Ctrl-C: an incomplete
    profile.json), then resumed: only the cases not yet measured run again."""
    probe.stop_at, probe.stop_with = 2, stop_with
    argv = ["profile", "--device", "cpu", "--probes", "hbm", "--no-report", "-o", str(tmp_path)]
    if stop_with is SystemExit:
        with pytest.raises(SystemExit):
            main(argv)
        assert (tmp_path / "records.partial.jsonl").exists()
    else:
        assert main(argv) == first_rc
        assert json.loads((tmp_path / "profile.json").read_text())["complete"] is False
    assert probe.calls == [0, 1, 2]
    assert main(argv) == 2  # the unfinished run is not overwritten by a fresh one
    assert "--resume" in capsys.readouterr().err

    probe.calls.clear()
    probe.stop_at = None
    assert main(["profile", "--resume", str(tmp_path), "--no-report"]) == 0
    assert probe.calls == [2, 3, 4]  # 0 and 1 were kept, not re-measured
    prof = json.loads((tmp_path / "profile.json").read_text())
    assert prof["complete"] is True
    assert sorted(r["i"] for r in prof["records"]) == list(range(N_CASES))
    assert not (tmp_path / "records.partial.jsonl").exists()
