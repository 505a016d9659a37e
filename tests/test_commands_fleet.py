"""`ridgeline fleet`: exit codes, the slow device named, --reference, --json, -o, bad input as
one line and exit 2, and docs/fleet.md's flags."""

import json
import re
from pathlib import Path

import pytest

from profile_fixtures import synthetic_profile
from ridgeline.cli import build_parser, main
from ridgeline.roofline.profile import load_profile, save_profile

ROOT = Path(__file__).resolve().parents[1]


def torchrun_dir(tmp_path, read_GBps=(3000.0, 3000.0, 3000.0, 3000.0)):
    """run/<host>-<local_rank>/profile.json as a torchrun run writes them; device i's read
    bandwidth is read_GBps[i]."""
    run = tmp_path / "run"
    for i, bw in enumerate(read_GBps):
        host, rank = f"node{i // 2}", i % 2
        path = synthetic_profile(run / f"{host}-{rank}" / "profile.json")
        p = load_profile(path)
        p["provenance"]["hostname"] = host
        p["provenance"]["device"]["id"] = f"cuda:{rank}"
        p["ceilings"]["memory_bandwidth_GBps"]["read"] = bw
        save_profile(p, path)
    return run


def test_a_device_20_percent_slow_is_named_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps to the terminal
    run = torchrun_dir(tmp_path, (3000.0, 3000.0, 2400.0, 3000.0))
    assert main(["fleet", str(run)]) == 1
    out = capsys.readouterr().out
    assert ("FAIL: 1 of 4 device(s) below the median beyond 5%: "
            "node1-0 (read bandwidth 0.800)") in out
    assert "node1 cuda:0" in out                     # its identity beside its path
    assert "node0-0 (" not in out.split("FAIL:")[1]   # only the slow one is named


def test_identical_profiles_exit_0(tmp_path, capsys):
    run = torchrun_dir(tmp_path)
    assert main(["fleet", str(run)]) == 0
    assert "OK: no device has a ceiling worse than the median beyond 5%" in capsys.readouterr().out


def test_reference_and_threshold(tmp_path, capsys):
    run = torchrun_dir(tmp_path)
    ref = load_profile(synthetic_profile(tmp_path / "golden.json"))
    ref["ceilings"]["memory_bandwidth_GBps"]["read"] = 3300.0   # every device 9% below it
    save_profile(ref, tmp_path / "golden.json")
    assert main(["fleet", str(run), "--reference", str(tmp_path / "golden.json")]) == 1
    assert "4 of 4 device(s) below the reference" in capsys.readouterr().out
    assert main(["fleet", str(run), "--reference", str(tmp_path / "golden.json"),
                 "--threshold", "0.10"]) == 0


def test_json_parses_and_matches_the_exit_code(tmp_path, capsys):
    run = torchrun_dir(tmp_path, (3000.0, 2400.0, 3000.0, 3000.0))
    files = [str(p) for p in sorted(run.rglob("profile.json"))]
    assert main(["fleet", *files, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["exit_code"] == 1 and result["failed_devices"] == [str(run / "node0-1")]
    read = next(r for r in result["quantities"] if r["quantity"] == "read bandwidth")
    assert [e["ratio"] for e in read["values"]] == [1.0, 0.8, 1.0, 1.0]


def test_output_folder_and_json_stdout_stay_apart(tmp_path, capsys):
    run = torchrun_dir(tmp_path, (3000.0, 2400.0, 3000.0))
    out = tmp_path / "fleet-out"
    assert main(["fleet", str(run), "--json", "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_devices"] == 3          # nothing else on stdout
    assert "fleet.html" in captured.err
    assert (out / "fleet.html").is_file() and (out / "fleet_read_bandwidth.png").is_file()
    assert json.loads((out / "fleet.json").read_text())["failed_devices"] == ["node0-1"]


@pytest.mark.parametrize("case", ["empty folder", "missing file", "malformed", "partial log",
                                  "bad threshold", "reference folder"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    run = torchrun_dir(tmp_path, (3000.0, 3000.0))
    (tmp_path / "empty").mkdir()
    args = {
        "empty folder": [str(tmp_path / "empty")],
        "missing file": [str(run), str(tmp_path / "nope.json")],
        "malformed": [str(run)],
        "partial log": [str(tmp_path / "records.partial.jsonl")],
        "bad threshold": [str(run), "--threshold", "5"],
        "reference folder": [str(run), "--reference", str(run)],
    }[case]
    if case == "malformed":
        (run / "node9-0").mkdir()
        (run / "node9-0" / "profile.json").write_text('{"kind": "ridgeline-profile", "sch')
    if case == "partial log":
        (tmp_path / "records.partial.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    assert main(["fleet", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("ridgeline fleet: error:") and "\n" not in err, err
    assert captured.out == ""


def test_help_and_documented_flags_exist(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fleet", "--help"])
    assert exc.value.code == 0 and "--reference" in capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["fleet"]
    known = {s for a in sub._actions for s in a.option_strings}
    doc = (ROOT / "docs" / "fleet.md").read_text()
    # the usage lines and the flags table: other commands' flags may appear in the prose
    lines = [ln for ln in doc.splitlines() if ln.startswith(("ridgeline fleet", "| `-"))]
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-o)\b", "\n".join(lines)))
    assert {"--reference", "--threshold", "--json", "-o"} <= documented
    assert documented <= known, documented - known
