"""`ridgeline profile` under torchrun (ridgeline.fleet_run), on the CPU over gloo.

The end-to-end runs start real torchrun jobs (two ranks; two one-rank "nodes" on this
machine for the inter-node link) with the launch probe only, so each takes seconds beyond
torch's start-up; the collective sweep runs regardless. Faults go through the test-only
RIDGELINE_TEST_TORCHRUN_FAULT variable (fleet_run.inject_fault): a rank that exits with an
error (no clean-up), and one that hangs. The rest are unit tests of the pieces.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ridgeline.cli import main
from ridgeline.fleet_run import (ARRIVED, FAULT_ENV, GONE, LATE, RankInfo, assign_nodes,
                                 folder_names, group_world_size, merge_group_records, own_probes,
                                 rank_device_spec, roll_call_message, short_error)
from ridgeline.errors import RidgelineError
from ridgeline.probes.inter_node import inter_node_GBps, link_sizes, pick_pair

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
HOST = socket.gethostname()
PROFILE = ["-m", "ridgeline", "profile", "--device", "cpu", "--quick", "--probes", "launch"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", FAULT_ENV)}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra})
    return env


def _torchrun(args, env=None, timeout=240):
    return subprocess.run([TORCHRUN, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env or _env())


def _profiles(out: Path) -> dict[str, dict]:
    from ridgeline.roofline.profile import load_profile

    return {p.parent.name: load_profile(p) for p in sorted(out.glob("*/profile.json"))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ end to end

def test_two_cpu_ranks_profile_measure_the_collectives_and_write_the_fleet(tmp_path):
    from ridgeline.roofline.interconnect import tp_allreduce_time
    from ridgeline.sizing.latency import _inter_node_GBps

    out = tmp_path / "run"
    proc = _torchrun(["--standalone", "--nproc-per-node", "2", *PROFILE, "-o", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    profiles = _profiles(out)
    assert sorted(profiles) == [f"{HOST}-0", f"{HOST}-1"]
    fits = []
    for name, prof in profiles.items():
        folder = out / name
        assert (folder / "records.csv").is_file() and (folder / "report.html").is_file()
        assert not (folder / "records.partial.jsonl").exists()
        assert prof["complete"] is True
        run = prof["provenance"]["torchrun"]
        assert (run["local_rank"], run["world_size"], run["nodes"]) == (int(name[-1]), 2, 1)
        # its own sweep left the collectives to the group; the group's are in it, measured
        assert prof["provenance"]["sweep"]["probes"] == ["launch"]
        assert {r["probe"] for r in prof["records"]} >= {"launch", "allreduce", "all_gather",
                                                         "reduce_scatter", "all_to_all"}
        ar = [r for r in prof["records"] if r["probe"] == "allreduce" and r["status"] == "ok"]
        assert ar and all(r["validated"] and r["world_size"] == 2 for r in ar)
        fit = prof["interconnect"]["allreduce"]["2"]
        assert fit["source"] == "measured" and fit["backend"] == "gloo" and fit["algbw_GBps"] > 0
        fits.append(fit)
        assert "allreduce" in (folder / "records.csv").read_text()
        # one node: no inter-node link measured, and the planner says so
        assert "inter_node_GBps" not in prof["interconnect"]
        assert _inter_node_GBps(SimpleNamespace(profile=prof))[1] == "assumed"
        est = tp_allreduce_time(256, 8, "fp32", 2, prof)
        assert est.source == "measured" and est.time_s > 0
    assert fits[0] == fits[1]  # one sweep, the same fit in every rank's profile
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["kind"] == "ridgeline-fleet" and fleet["n_devices"] == 2
    assert (out / "fleet.html").is_file()
    assert "wrote" in proc.stderr and "fleet.json" in proc.stderr


def test_two_nodes_measure_the_inter_node_link(tmp_path):
    from ridgeline.sizing.latency import _inter_node_GBps

    out, port = tmp_path / "run", _free_port()

    def node(rank):
        return subprocess.Popen(
            [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
             "--master-addr", "127.0.0.1", "--master-port", str(port), *PROFILE, "--no-report",
             "-o", str(out)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    procs = [node(0), node(1)]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    profiles = _profiles(out)
    # both "nodes" have this machine's hostname: the folders carry the node rank
    assert sorted(profiles) == [f"{HOST}-node0-0", f"{HOST}-node1-0"]
    values = {name: p["interconnect"]["inter_node_GBps"] for name, p in profiles.items()}
    assert len(set(values.values())) == 1 and next(iter(values.values())) > 0
    for prof in profiles.values():
        link = [r for r in prof["records"] if r["probe"] == "inter_node"]
        assert [r["size_bytes"] for r in link] == link_sizes(False, True)
        assert all(r["validated"] and (r["src_rank"], r["dst_rank"]) == (0, 1) for r in link)
        assert prof["interconnect"]["inter_node_GBps"] == pytest.approx(inter_node_GBps(link))
        assert _inter_node_GBps(SimpleNamespace(profile=prof)) == (
            prof["interconnect"]["inter_node_GBps"], "measured")
        assert prof["provenance"]["torchrun"]["nodes"] == 2
    assert "inter-node link:" in results[0][1]


def test_a_rank_that_exits_is_named_and_the_others_profile_is_kept(tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    proc = _torchrun(["--standalone", "--nproc-per-node", "2", *PROFILE, "--no-report",
                      "-o", str(out)], env=_env(**{FAULT_ENV: "1:exit:sweep"}))
    assert proc.returncode != 0
    assert time.monotonic() - start < 120  # named at once, not at the 1800 s rank timeout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ridgeline profile: error:")]
    assert errors, proc.stderr[-3000:]
    assert (f"rank 1 ({HOST}, local rank 1) left the job during 'the collective sweep'"
            in errors[0]), errors
    profiles = _profiles(out)
    kept = profiles[f"{HOST}-0"]
    assert kept["complete"] is True and any(r["probe"] == "launch" for r in kept["records"])
    assert any("torchrun group stage failed" in w and "rank 1" in w for w in kept["warnings"])
    assert "allreduce" not in kept["interconnect"]
    assert f"{HOST}-1" in profiles  # written before the group stage: kept as well
    assert not (out / "fleet.json").exists()


def test_a_hung_rank_is_named_within_the_rank_timeout(tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    proc = _torchrun(["--standalone", "--nproc-per-node", "2", *PROFILE, "--no-report",
                      "--rank-timeout-s", "5", "-o", str(out)],
                     env=_env(**{FAULT_ENV: "1:hang:rollcall"}))
    assert proc.returncode != 0
    assert time.monotonic() - start < 120
    assert (f"rank 1 ({HOST}, local rank 1) did not reach 'every rank's own profile written' "
            "within 5 s (hung, or still busy)") in proc.stderr, proc.stderr[-3000:]
    kept = _profiles(out)[f"{HOST}-0"]
    assert any("did not reach" in w for w in kept["warnings"])


# ------------------------------------------------------------------ the pieces

def test_without_torchrun_or_with_one_rank_the_command_is_the_single_device_run(
        tmp_path, monkeypatch, capsys):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert group_world_size() == 1
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert group_world_size() == 1
    calls = []

    def fake_run_profile(device, probes, **kw):
        calls.append((device.id, probes, Path(kw["out_dir"])))
        raise RidgelineError("stop here")

    monkeypatch.setattr("ridgeline.runner.run_profile", fake_run_profile)
    assert main(["profile", "--device", "cpu", "--probes", "launch,allreduce", "-o",
                 str(tmp_path / "out")]) == 2
    # the folder itself (no per-rank sub-folder) and every probe asked for, allreduce included
    assert calls == [("cpu", ["launch", "allreduce"], tmp_path / "out")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert group_world_size() == 2


def test_resume_under_torchrun_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["profile", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without torchrun" in err[0] and "<local_rank>" in err[0]


def test_folders_are_host_and_local_rank_unless_hosts_repeat():
    two_nodes = [RankInfo(0, 0, 0, "a"), RankInfo(1, 1, 0, "a"), RankInfo(2, 0, 1, "b.x/y")]
    assert folder_names(two_nodes) == ["a-0", "a-1", "b.x_y-0"]
    same_host = [RankInfo(0, 0, 0, "c"), RankInfo(1, 0, 1, "c")]
    assert folder_names(same_host) == ["c-node0-0", "c-node1-0"]
    with pytest.raises(RidgelineError, match="same host, node and local rank"):
        folder_names([RankInfo(0, 0, 0, "c"), RankInfo(1, 0, 0, "c")])
    # a launcher without GROUP_RANK: nodes in the order the hosts first appear
    assert [i.node for i in assign_nodes([RankInfo(0, 0, -1, "b"), RankInfo(1, 0, -1, "a"),
                                          RankInfo(2, 1, -1, "b")])] == [0, 1, 0]


def test_each_rank_profiles_its_local_gpu_or_the_cpu():
    assert rank_device_spec(None, 3, 8) == "cuda:3"
    assert rank_device_spec("cuda", 3, 8) == "cuda:3"
    assert rank_device_spec("cuda:3", 3, 8) == "cuda:3"
    assert rank_device_spec("cpu", 3, 8) == "cpu"
    assert rank_device_spec(None, 1, 0) == "cpu"
    with pytest.raises(RidgelineError, match="cuda:LOCAL_RANK"):
        rank_device_spec("cuda:0", 3, 8)
    with pytest.raises(RidgelineError, match="sees 2 GPU"):
        rank_device_spec(None, 3, 2)
    with pytest.raises(RidgelineError, match="unknown device"):
        rank_device_spec("tpu", 0, 8)
    assert own_probes(["hbm", "p2p", "allreduce", "launch"]) == ["hbm", "launch"]


def test_roll_call_verdicts_name_who_left_and_who_is_late():
    names = [f"rank {r}" for r in range(4)]
    assert roll_call_message("s", [ARRIVED] * 4, names, 5) is None
    msg = roll_call_message("s", [ARRIVED, GONE, ARRIVED, LATE], names, 5)
    assert msg == ("rank 1 left the job before 's' (the process exited or its connection "
                   "broke); rank 3 did not reach 's' within 5 s (hung, or still busy)")
    assert "rank 1 left the job during 's'" in roll_call_message("s", [1, 0, 1, 1], names, 5,
                                                                "during")
    err = RuntimeError("[/x/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                       "[1.2.3.4]:5. This is typically caused by a remote worker crashing.")
    assert short_error(err) == "RuntimeError: Connection closed by peer [1.2.3.4]:5"


def test_the_inter_node_pair_is_rank_0_and_the_first_rank_of_another_node():
    assert pick_pair([0, 0, 0, 0]) is None
    assert pick_pair([0, 0, 1, 1]) == (0, 2)
    assert pick_pair([1, 0]) == (0, 1)
    for gpu in (True, False):
        for quick in (True, False):
            sizes = link_sizes(gpu, quick)
            assert sizes == sorted(sizes) and sizes[-1] == 16 * sizes[0]


def _rec(probe, size, ms, **kw):
    return {"probe": probe, "status": "ok", "validated": True, "size_bytes": size,
            "time_ms_median": ms, "time_ms_p20": ms, "time_ms_p80": ms, **kw}


def test_merging_the_group_records_refits_the_interconnect_and_is_idempotent():
    from ridgeline.device import cpu_device
    from ridgeline.roofline.profile import new_profile, validate_profile

    prof = new_profile(cpu_device().to_dict(), command_line=["x"], versions={},
                       sweep={"probes": ["launch"], "quick": True, "options": {}})
    prof.update(complete=True, incomplete_reason=None)
    own = [_rec("launch", 0, 0.01)]
    prof["records"] = list(own)
    sizes = [4, 4096, 4 * 2**20]
    ar = [_rec("allreduce", s, 0.1 + s / 1e6, world_size=2, dtype="fp32", provider="gloo",
               link="loopback", nodes=1) for s in sizes]
    # 1 GB/s, then 2 GB/s twice: the plateau is the median of those within 10% of the best
    link = [_rec("inter_node", s, s / g / 1e6, algbw_GBps=g)
            for s, g in ((2**20, 1.0), (2**22, 2.0), (2**24, 2.0))]
    for _ in range(2):
        merge_group_records(prof, ar + link, torchrun={"rank": 1})
    assert len(prof["records"]) == len(own) + len(ar) + len(link)
    ic = prof["interconnect"]
    assert ic["inter_node_GBps"] == pytest.approx(2.0)
    assert ic["allreduce"]["2"]["source"] == "measured" and ic["allreduce"]["2"]["n_points"] == 3
    assert prof["provenance"]["torchrun"] == {"rank": 1} and prof["complete"] is True
    validate_profile(json.loads(json.dumps(prof)))  # the schema is unchanged
    failed = {"probe": "all_gather", "status": "failed", "validated": False, "provider": "gloo",
              "dtype": "fp32", "reason": "rank 1 died", "world_size": 2}
    merge_group_records(prof, ar + link + [failed])
    assert prof["complete"] is False and "1 all_gather case(s) failed" in prof["incomplete_reason"]
    assert any(w["reason"] == "rank 1 died" for w in prof["waived"])


def test_the_docs_name_flags_the_command_has():
    from ridgeline.cli import build_parser

    doc = (ROOT / "docs" / "torchrun.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["profile"]
    flags = {s for a in sub._actions for s in a.option_strings}
    documented = {ln.split("`")[1].split()[0] for ln in doc.splitlines()
                  if ln.startswith("| `-")}
    assert documented and documented <= flags
    assert "--rank-timeout-s" in documented and "--rdzv-backend c10d" in doc and "srun" in doc
    assert "docs/torchrun.md" in (ROOT / "README.md").read_text()
