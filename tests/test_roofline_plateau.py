"""Verified plateaus: the rule (pure), the adaptive hbm sweep, noise re-measured and flagged."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ridgeline.contention import ContentionMeter, causes
from ridgeline.device import cpu_device
from ridgeline.roofline.ceilings import fit_ceilings
from ridgeline.roofline.plateau import find_plateau
from ridgeline.roofline.trust import NOISY, UNVERIFIED, VERIFIED, untrusted_ceilings
from ridgeline.partial import PARTIAL_KIND
from ridgeline.runner import run_profile
from ridgeline.timing import FakeTimer, Timer, Timing

MiB = 2**20


# ------------------------------------------------------------------ the rule

def test_flat_over_two_doublings_is_verified():
    p = find_plateau([(64 * MiB, 98.0), (128 * MiB, 60.0), (256 * MiB, 45.0), (512 * MiB, 44.0),
                      (1024 * MiB, 45.5)], floor_bytes=128 * MiB)
    assert p.verified and p.reason is None
    assert p.sizes_bytes == [256 * MiB, 512 * MiB, 1024 * MiB]
    assert p.value == 45.0


def test_the_issue_curve_is_not_a_plateau_at_4x_the_reported_cache():
    # the CPU curve of issue 9: 98 GB/s at 134 MB, 83 at 268 MB, 44 at 537 MB
    p = find_plateau([(128 * MiB, 98.0), (256 * MiB, 83.0), (512 * MiB, 44.0)],
                     floor_bytes=128 * MiB)
    assert not p.verified
    assert "still changing" in p.reason and p.value == 44.0


def test_too_few_sizes_and_in_cache_are_unverified_with_the_reason():
    two = find_plateau([(256 * MiB, 45.0), (512 * MiB, 45.0)], floor_bytes=128 * MiB)
    assert not two.verified and "only 2 size(s)" in two.reason
    cached = find_plateau([(8 * MiB, 180.0), (16 * MiB, 187.0)], floor_bytes=128 * MiB)
    assert not cached.verified and "may still be served by a cache" in cached.reason
    assert find_plateau([], floor_bytes=1).reason == "no measured sizes"


def _rec(size, bw, p20=0.99, p80=1.01, attempt=1):
    t = size / bw / 1e6
    return {"probe": "hbm", "kernel": "copy", "provider": "torch", "size_bytes": size,
            "bw_GBps": bw, "status": "ok", "validated": True, "attempt": attempt,
            "time_ms_median": t, "time_ms_p20": p20 * t, "time_ms_p80": p80 * t}


def test_scattered_samples_make_a_noisy_ceiling_and_the_quietest_attempt_counts():
    dev = {"l2_cache_bytes": 32 * MiB}
    sizes = [256 * MiB, 512 * MiB, 1024 * MiB]
    noisy = [_rec(s, 40.0, p20=0.5, p80=1.8) for s in sizes]
    c = fit_ceilings(noisy, dev)["memory_bandwidth_detail"]["copy"]
    assert c["status"] == NOISY and "samples spread 130%" in c["reason"]
    # the same sizes measured again on a quiet machine: the quiet attempt is kept
    quiet = [_rec(s, 44.0, attempt=2) for s in sizes]
    c2 = fit_ceilings(noisy + quiet, dev)
    assert c2["memory_bandwidth_detail"]["copy"]["status"] == VERIFIED
    assert c2["memory_bandwidth_GBps"]["copy"] == 44.0


def test_untrusted_ceilings_of_a_profile_and_of_an_older_one():
    profile = {"ceilings": {"memory_bandwidth_GBps": {"copy": 44.0, "read": 50.0},
                            "memory_bandwidth_detail": {
                                "copy": {"status": VERIFIED, "reason": None, "spread": {}},
                                "read": {"status": UNVERIFIED, "reason": "only 1 size(s)"}},
                            "matmul_TFLOPS": {"bf16": 1.0}, "matmul_detail": {"bf16": {}}}}
    names = {c.name: c.status for c in untrusted_ceilings(profile)}
    assert names == {"read bandwidth": UNVERIFIED, "bf16 matmul": UNVERIFIED}  # no status: older


# ------------------------------------------------------------------ the sweep

class CacheCurveTimer(Timer):
    """Times of a machine whose cache (`cache_bytes`, larger than the one it reports) serves
    min(1, cache / working set) of the traffic at `fast_GBps`, the rest at `slow_GBps`.

    work.bytes equals the working set for every stream kernel (copy: read + write of
    half each; triad: three thirds), so the curve is a function of the working set.
    """

    name = "fake"

    def __init__(self, cache_bytes: int, fast_GBps=100.0, slow_GBps=50.0, spread=(0.99, 1.01)):
        self.cache, self.fast, self.slow, self.spread = cache_bytes, fast_GBps, slow_GBps, spread
        self.calls = 0

    def time(self, fn, *, work=None, **kw):
        fn()
        self.calls += 1
        hit = min(1.0, self.cache / work.bytes) if self.cache else 0.0
        ms = work.bytes * (hit / self.fast + (1 - hit) / self.slow) / 1e9 * 1e3
        lo, hi = self.spread
        return Timing([ms * f for f in np.linspace(lo, hi, 11)], self.name)


def _device(cache_bytes):
    dev = cpu_device()
    dev.l2_cache_bytes = cache_bytes
    return dev


REPORTED = 3 * 4096 * 8  # the cache the device reports: 96 KiB


@pytest.fixture
def small_floor(monkeypatch):
    """Scale the 256 MiB plateau floor down with the test's small caches."""
    monkeypatch.setattr("ridgeline.roofline.trust.PLATEAU_MIN_BYTES", 64 * REPORTED)


def test_sweep_goes_on_past_the_floor_until_the_rate_is_flat(tmp_path, small_floor):
    real_cache = 16 * REPORTED  # invisible to the system, as on the machine of issue 9
    profile = run_profile(_device(REPORTED), ["hbm"], quick=True, out_dir=tmp_path,
                          timer=CacheCurveTimer(real_cache),
                          options={"hbm": {"kernels": ["copy"]}}, versions={})
    detail = profile["ceilings"]["memory_bandwidth_detail"]["copy"]
    assert detail["status"] == VERIFIED, detail
    # 64x: 57 GB/s, 128x: 53.3, 256x: 51.6, 512x: 50.8 -> flat from 128x on, one size past
    # the planned sweep (64x..256x)
    assert detail["plateau_sizes_bytes"][0] >= 128 * REPORTED
    assert detail["largest_size_bytes"] >= 512 * REPORTED
    assert profile["ceilings"]["memory_bandwidth_GBps"]["copy"] == pytest.approx(51.6, rel=0.02)
    assert profile["complete"] and not untrusted_ceilings(profile)


def test_a_flat_rate_inside_a_cache_below_the_floor_is_not_a_plateau():
    # the 256 MiB floor: flat at 4x, 8x, 16x a 4 MiB reported L2 is MI300X's Infinity Cache
    recs = [_rec(s * MiB, 3000.0) for s in (16, 32, 64)] + [_rec(512 * MiB, 2000.0)]
    c = fit_ceilings(recs, {"l2_cache_bytes": 4 * MiB})["memory_bandwidth_detail"]["copy"]
    assert c["status"] == UNVERIFIED and c["bw_GBps"] == 2000.0


def test_a_sweep_stopped_by_memory_before_its_plateau_is_unverified(tmp_path, monkeypatch,
                                                                   small_floor):
    monkeypatch.setattr("ridgeline.probes.hbm.MAX_QUICK_SWEEP_BYTES", {True: 1, False: 300 * REPORTED})
    profile = run_profile(_device(REPORTED), ["hbm"], quick=True, out_dir=tmp_path,
                          timer=CacheCurveTimer(16 * REPORTED),
                          options={"hbm": {"kernels": ["copy"]}}, versions={})
    detail = profile["ceilings"]["memory_bandwidth_detail"]["copy"]
    assert detail["status"] == UNVERIFIED and detail["largest_size_bytes"] <= 300 * REPORTED
    assert any("copy bandwidth unverified" in w for w in profile["warnings"])


class NoisyThenQuietTimer(CacheCurveTimer):
    """Scattered samples on a first measurement of each size, tight ones after."""

    def __init__(self, *a, quiet_after=1, **kw):
        super().__init__(*a, **kw)
        self.seen: dict[float, int] = {}
        self.quiet_after = quiet_after

    def time(self, fn, *, work=None, **kw):
        n = self.seen[work.bytes] = self.seen.get(work.bytes, 0) + 1
        self.spread = (0.6, 2.0) if n <= self.quiet_after else (0.99, 1.01)
        return super().time(fn, work=work, **kw)


def test_noisy_sizes_are_measured_again_and_stay_flagged_when_they_stay_noisy(tmp_path,
                                                                             small_floor):
    cache = REPORTED
    opts = {"hbm": {"kernels": ["read"]}}
    quiet_later = NoisyThenQuietTimer(0, quiet_after=1)
    p1 = run_profile(_device(cache), ["hbm"], quick=True, out_dir=tmp_path / "a",
                     timer=quiet_later, options=opts, versions={})
    assert p1["ceilings"]["memory_bandwidth_detail"]["read"]["status"] == VERIFIED
    assert any(r.get("attempt") == 2 for r in p1["records"])
    always = NoisyThenQuietTimer(0, quiet_after=99)
    p2 = run_profile(_device(cache), ["hbm"], quick=True, out_dir=tmp_path / "b",
                     timer=always, options=opts, versions={})
    d2 = p2["ceilings"]["memory_bandwidth_detail"]["read"]
    assert d2["status"] == NOISY and d2["spread"]["samples_p20_p80"] > 0.5
    assert max(r.get("attempt", 1) for r in p2["records"]) == 2  # quick: two attempts at most
    assert any(w.startswith("noisy ceilings:") for w in p2["warnings"])


# ------------------------------------------------------------------ resume and the fit guard

class InterruptAfter(FakeTimer):
    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def time(self, fn, **kw):
        self.calls += 1
        if self.calls > self.n:
            raise KeyboardInterrupt
        return super().time(fn, **kw)


def test_resume_measures_only_the_missing_cases(tmp_path):
    cache = 3 * 4096 * 8
    opts = {"hbm": {"sizes": [3 * 4096 * k for k in (4, 40, 80, 160)], "providers": ["torch"]}}
    first = run_profile(_device(cache), ["hbm"], out_dir=tmp_path, timer=InterruptAfter(6),
                        options=opts, versions={})
    assert first["complete"] is False and len(first["records"]) == 6
    # a killed run leaves only the partial file: rebuild it from the saved records
    lines = [json.dumps({"kind": PARTIAL_KIND})] + [json.dumps(r) for r in first["records"]]
    resumed = [json.loads(x) for x in lines[1:]]
    counting = FakeTimer()
    calls = []
    real = counting.time
    counting.time = lambda fn, **kw: calls.append(1) or real(fn, **kw)
    second = run_profile(_device(cache), ["hbm"], out_dir=tmp_path, timer=counting, options=opts,
                         versions={}, resume_records=resumed)
    assert len(calls) == 16 - 6  # 4 kernels x 4 sizes, 6 already measured
    assert second["complete"] is True and len(second["records"]) == 16
    assert second["provenance"]["resumed_cases"] == 6


def test_the_partial_file_starts_with_a_header_and_survives_a_kill(tmp_path, monkeypatch):
    def killed(*a, **kw):
        raise SystemExit("killed before the profile was written")

    monkeypatch.setattr("ridgeline.runner.save_profile", killed)
    opts = {"hbm": {"sizes": [3 * 4096 * 4, 3 * 4096 * 8], "providers": ["torch"],
                    "kernels": ["copy"]}}
    with pytest.raises(SystemExit):
        run_profile(_device(3 * 4096 * 8), ["hbm"], quick=True, out_dir=tmp_path,
                    timer=FakeTimer(), options=opts, versions={},
                    command_line=["ridgeline", "profile"])
    lines = (tmp_path / "records.partial.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == PARTIAL_KIND and header["probes"] == ["hbm"]
    assert header["quick"] is True and header["options"] == opts
    assert [json.loads(x)["size_bytes"] for x in lines[1:]] == [3 * 4096 * 4, 3 * 4096 * 8]


def test_a_fit_that_raises_still_saves_records_and_profile(tmp_path, monkeypatch):
    def broken(profile):
        raise ValueError("singular matrix")

    monkeypatch.setattr("ridgeline.runner.fit_profile", broken)
    opts = {"hbm": {"sizes": [3 * 4096 * 4], "providers": ["torch"], "kernels": ["copy"]}}
    profile = run_profile(_device(3 * 4096 * 8), ["hbm"], out_dir=tmp_path, timer=FakeTimer(),
                          options=opts, versions={})
    saved = json.loads((tmp_path / "profile.json").read_text())
    assert len(saved["records"]) == 1 and (tmp_path / "records.csv").exists()
    assert any("the fit failed (ValueError: singular matrix)" in w for w in saved["warnings"])
    assert profile["records"] == saved["records"]


# ------------------------------------------------------------------ contention

def _orphan_busy_loop() -> int:
    """A busy process that is not ours (double fork: re-parented away from this test)."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' "
                          ">/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_busy_process_shows_as_other_cpu_load():
    import os
    import signal

    pid = _orphan_busy_loop()
    try:
        time.sleep(0.2)  # past the interpreter's start-up
        meter = ContentionMeter()
        meter.start()
        time.sleep(0.6)
        load = meter.read()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert load["host_other_cpu_pct"] >= 20.0, load  # one of 2 cores: ~50%
    assert 0.0 <= load["host_steal_pct"] <= 100.0
    assert "other processes used up to" in causes([load])[0]


def test_our_own_workers_count_as_our_own_time():
    import os

    from ridgeline.contention import _own_ticks

    ticks_per_s = os.sysconf("SC_CLK_TCK")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a worker of ours
    try:
        time.sleep(0.2)
        before = _own_ticks()
        time.sleep(0.8)
        after = _own_ticks()
    finally:
        busy.kill()
        busy.wait()
    # the running (not yet waited-for) child's CPU time is ours: at least a third of the
    # window even on a busy 2-core machine; independent of what else runs
    assert after - before >= 0.8 * ticks_per_s / 3, (before, after)


def test_an_idle_window_shows_little_other_load():
    meter = ContentionMeter()
    meter.start()
    time.sleep(0.3)
    assert "host_other_cpu_pct" in meter.read()


# ------------------------------------------------------------------ a partial sweep is never planned

def test_an_interrupt_during_the_first_sizes_gives_no_ceiling_the_planner_accepts(tmp_path,
                                                                                   capsys):
    from ridgeline.cli import main

    opts = {"hbm": {"providers": ["torch"], "kernels": ["read", "copy"]},
            "matmul": {"dtypes": ["fp32"], "shapes": [("square", 64, 64, 64),
                                                      ("square", 96, 96, 96)]}}
    # quick sweep: 1 cache-resident size, then the plateau floor: stop after the second read size
    profile = run_profile(_device(REPORTED), ["hbm", "matmul"], quick=True, out_dir=tmp_path,
                          timer=InterruptAfter(2), options=opts, versions={})
    read = profile["ceilings"]["memory_bandwidth_detail"]["read"]
    assert profile["complete"] is False and read["status"] == UNVERIFIED
    assert main(["plan", "--model", "llama-3.1-8b", "--input-p95", "1024", "--output-p95", "256",
                 "--concurrency", "8",
                 "--profile", str(tmp_path / "profile.json")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read bandwidth unverified" in err[0], err


# ------------------------------------------------------------------ disturbance between cases

def test_a_larger_size_running_faster_marks_the_smaller_one_disturbed():
    # this machine under load: tight samples, but whole cases slowed (issue 9's 7.8/17.2/34.3)
    pts = [(256 * MiB, 30.0), (512 * MiB, 31.0), (1024 * MiB, 46.7), (2048 * MiB, 46.0),
           (4096 * MiB, 47.3)]
    p = find_plateau(pts, floor_bytes=256 * MiB)
    assert p.verified and p.sizes_bytes == [1024 * MiB, 2048 * MiB, 4096 * MiB]
    assert p.dips_bytes == [256 * MiB, 512 * MiB] and not p.still_falling
    stuck = find_plateau(pts[:3], floor_bytes=256 * MiB)  # no plateau: disturbed, not cached
    assert not stuck.verified and not stuck.still_falling
    assert "the smaller one was disturbed" in stuck.reason
    c = fit_ceilings([_rec(s, r) for s, r in pts[:3]],
                     {"l2_cache_bytes": MiB})["memory_bandwidth_detail"]["copy"]
    assert c["status"] == NOISY and c["disturbed_sizes_bytes"] == [256 * MiB, 512 * MiB]


class DisturbedOnceTimer(CacheCurveTimer):
    """Whole cases at some sizes run at 60% speed the first time (tight samples)."""

    def __init__(self, slow_sizes, **kw):
        super().__init__(0, **kw)
        self.slow_sizes, self.seen = set(slow_sizes), {}

    def time(self, fn, *, work=None, **kw):
        t = super().time(fn, work=work, **kw)
        n = self.seen[work.bytes] = self.seen.get(work.bytes, 0) + 1
        if work.bytes in self.slow_sizes and n == 1:
            t.samples_ms = [x / 0.6 for x in t.samples_ms]
        return t


def test_a_disturbed_case_is_measured_again_and_its_fastest_attempt_counts(tmp_path,
                                                                           small_floor):
    from ridgeline.probes.hbm import round_size

    disturbed = round_size(128 * REPORTED)  # the middle size of the quick plateau sizes
    timer = DisturbedOnceTimer({disturbed})
    profile = run_profile(_device(REPORTED), ["hbm"], quick=True, out_dir=tmp_path, timer=timer,
                          options={"hbm": {"kernels": ["copy"]}}, versions={})
    detail = profile["ceilings"]["memory_bandwidth_detail"]["copy"]
    assert detail["status"] == VERIFIED, detail
    assert profile["ceilings"]["memory_bandwidth_GBps"]["copy"] == pytest.approx(50.0, rel=0.02)
    again = [r for r in profile["records"] if r.get("attempt") == 2]
    assert [r["size_bytes"] for r in again] == [disturbed]
    assert timer.seen[disturbed] == 2 and len(timer.seen) == 4  # no other size measured twice
