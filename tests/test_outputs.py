"""Output folders never lose data: checked before measuring, locked, written atomically."""

import errno
import fcntl
import json
import os
from pathlib import Path

import pytest

from ridgeline import outputs
from ridgeline.cli import main
from ridgeline.errors import RidgelineError
from ridgeline.outputs import (LOCK_NAME, OutputError, atomic_write_bytes, atomic_write_text,
                               prepare_output_dir)
from ridgeline.partial import PARTIAL_NAME, PartialError, load_resume, read_partial_records


def saved_profile(path: Path, *, complete: bool = True, name: str = "Test CPU",
                  when: str = "2025-03-04T05:06:07+00:00") -> Path:
    from ridgeline.device import cpu_device
    from ridgeline.roofline.profile import new_profile, save_profile

    dev = cpu_device().to_dict()
    dev["name"] = name
    prof = new_profile(dev, command_line=["ridgeline", "profile"], versions={},
                       sweep={"probes": ["hbm"], "quick": True, "options": {}})
    prof["provenance"]["timestamp_utc"] = when
    prof["complete"] = complete
    prof["records"] = [{"probe": "hbm", "kernel": "copy", "status": "ok", "i": 0}]
    return save_profile(prof, path)


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and isinstance(exc_info.value, RidgelineError)
    return text


# ------------------------------------------------------------------ the folder

def test_a_new_folder_is_created_locked_and_removed_again_when_nothing_was_written(tmp_path):
    folder = tmp_path / "a" / "b"
    with prepare_output_dir(folder, force=False, what="profile") as out:
        assert folder.is_dir() and out.lock.held
        assert (folder / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not folder.exists()  # a run that failed before writing leaves nothing behind


def test_a_folder_that_got_files_is_kept_and_unlocked(tmp_path):
    with prepare_output_dir(tmp_path / "o", force=False, what="profile") as out:
        (out.path / "profile.json").write_text("{}")
    assert (tmp_path / "o" / "profile.json").exists()
    assert (tmp_path / "o" / LOCK_NAME).read_text() == ""  # no stale PID


@pytest.mark.parametrize("make,needle", [
    (lambda t: (t / "f").write_text("x") and t / "f", "is a file; -o takes a folder"),
    (lambda t: (t / "f").write_text("x") and t / "f" / "sub", "Not a directory"),
    (lambda t: Path("/proc/ridgeline-test-out"), "No such file or directory"),
    (lambda t: Path("/proc"), "cannot write to the output folder /proc"),
])
def test_unusable_outputs_are_one_line(tmp_path, make, needle):
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(make(tmp_path), force=False, what="profile")
    assert needle in one_line(exc)


def test_a_held_profile_is_refused_without_force_naming_when_and_where(tmp_path):
    saved_profile(tmp_path / "profile.json")
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(tmp_path, force=False, what="profile")
    text = one_line(exc)
    assert text.startswith(f"{tmp_path} already holds a profile")
    assert "2025-03-04T05:06:07+00:00" in text and "Test CPU" in text and "--force" in text
    assert not (tmp_path / LOCK_NAME).read_text()  # refused: the lock is released


def test_an_incomplete_profile_or_a_killed_run_points_at_resume(tmp_path):
    saved_profile(tmp_path / "profile.json", complete=False)
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(tmp_path, force=False, what="profile")
    assert "incomplete profile" in one_line(exc) and f"--resume {tmp_path}" in str(exc.value)
    (tmp_path / "profile.json").unlink()
    (tmp_path / PARTIAL_NAME).write_text('{"kind": "ridgeline-partial", "device_name": "X"}\n'
                                         '{"probe": "hbm"}\n{"probe": "hbm"}\n')
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(tmp_path, force=False, what="profile")
    text = one_line(exc)
    assert "unfinished run" in text and "2 records on X" in text and "--resume" in text


def test_force_removes_only_ridgeline_outputs(tmp_path):
    saved_profile(tmp_path / "profile.json")
    ours = ["records.csv", "report.md", "report.html", "roofline.png", "gemv_vs_batch.png",
            "validation.json", "validation.md", "validation.png", PARTIAL_NAME,
            ".profile.json.abc123.tmp", "profile.json.tmp"]
    theirs = ["notes.txt", "my-plot.png", "profile.json.bak", ".hidden"]
    for name in ours + theirs:
        (tmp_path / name).write_text("old")
    with prepare_output_dir(tmp_path, force=True, what="profile") as out:
        assert (tmp_path / "profile.json").exists()  # nothing removed before clear()
        gone = out.clear()
    assert sorted(p.name for p in gone) == sorted(ours + ["profile.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs + [LOCK_NAME])


def test_figure_names_alone_are_not_proof_a_file_is_ours(tmp_path):
    (tmp_path / "roofline.png").write_text("someone's own chart")
    with prepare_output_dir(tmp_path, force=False, what="profile") as out:
        assert out.clear() == []
    assert (tmp_path / "roofline.png").exists()


def test_validate_may_share_the_profile_folder_but_not_replace_a_validation(tmp_path):
    saved_profile(tmp_path / "profile.json")
    with prepare_output_dir(tmp_path, force=False, what="validation") as out:
        (tmp_path / "validation.json").write_text(json.dumps(
            {"kind": "ridgeline-validation", "model": "tiny",
             "provenance": {"timestamp_utc": "T0", "device": {"name": "Test CPU"}}}))
        assert out.clear() == [tmp_path / "validation.json"]
    (tmp_path / "validation.json").write_text(json.dumps({"model": "tiny", "provenance": {
        "timestamp_utc": "T1"}}))
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(tmp_path, force=False, what="validation")
    assert "already holds a validation (validation.json: tiny from T1)" in one_line(exc)
    with prepare_output_dir(tmp_path, force=True, what="validation") as out:
        assert [p.name for p in out.clear()] == ["validation.json"]
    assert (tmp_path / "profile.json").exists()  # validate --force never touches its input


def test_a_report_goes_only_beside_its_own_profile(tmp_path):
    mine = saved_profile(tmp_path / "mine" / "profile.json")
    other = saved_profile(tmp_path / "other" / "profile.json", when="T-other")
    with prepare_output_dir(mine.parent, force=False, what="report", input_profile=mine):
        pass
    with pytest.raises(OutputError) as exc:
        prepare_output_dir(other.parent, force=False, what="report", input_profile=mine)
    assert "holds another profile (profile.json: from T-other" in one_line(exc)


# ------------------------------------------------------------------ the lock

def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    with prepare_output_dir(tmp_path, force=False, what="profile"):
        with pytest.raises(OutputError) as exc:
            prepare_output_dir(tmp_path, force=False, what="validation")
        assert f"in use by another ridgeline run (PID {os.getpid()}" in one_line(exc)
    with prepare_output_dir(tmp_path, force=False, what="profile") as out:  # released: free again
        assert out.lock.held


def test_a_lock_held_by_another_process_is_seen(tmp_path):
    import subprocess
    import sys

    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d\\n' % os.getpid());"
            "print('held', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / LOCK_NAME)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputError) as exc:
            prepare_output_dir(tmp_path, force=False, what="profile")
        assert f"(PID {proc.pid} holds its lock)" in one_line(exc)
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ atomic writes

def test_atomic_write_replaces_and_keeps_a_normal_mode(tmp_path):
    target = tmp_path / "profile.json"
    target.write_text("old")
    old_mask = os.umask(0o022)
    try:
        atomic_write_text(target, "new ✓")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new ✓"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]


@pytest.mark.parametrize("where,code,strerror", [
    ("_write_all", errno.ENOSPC, "No space left on device"),
    ("replace", errno.EROFS, "Read-only file system"),
    ("fsync", errno.EIO, "Input/output error"),
    ("mkstemp", errno.EACCES, "Permission denied"),
])
def test_a_failed_write_is_one_line_keeps_the_old_file_and_leaves_no_temp(
        tmp_path, monkeypatch, where, code, strerror):
    target = tmp_path / "profile.json"
    target.write_text("old")

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    if where == "_write_all":
        monkeypatch.setattr(outputs, "_write_all", fail)
    elif where == "mkstemp":  # a folder we may not write in (root ignores chmod: simulate it)
        monkeypatch.setattr(outputs.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(outputs.os, where, fail)
    with pytest.raises(OutputError) as exc:
        atomic_write_bytes(target, b"new")
    assert one_line(exc) == f"cannot write {target}: {strerror}"
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]


def test_ctrl_c_mid_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "validation.json"
    target.write_text("old")

    def interrupted(fd, data):
        os.write(fd, data[:2])
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "brand new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["validation.json"]


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(OutputError) as exc:
        atomic_write_text(tmp_path / "gone" / "x.json", "{}")
    assert one_line(exc).endswith("No such file or directory")


# ------------------------------------------------------------------ a killed run's records

def test_a_truncated_last_line_is_skipped_and_counted(tmp_path):
    path = tmp_path / PARTIAL_NAME
    header = {"kind": "ridgeline-partial", "device_id": "cpu", "device_name": "Test CPU",
              "probes": ["hbm"], "quick": True, "options": {}, "command_line": ["ridgeline"]}
    recs = [{"probe": "hbm", "i": i, "note": "µ"} for i in range(3)]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in [header, *recs])
    cut = json.dumps({"probe": "hbm", "i": 3, "note": "µµµ"}, ensure_ascii=False).encode()
    # killed mid-line, and mid-character: the bytes end inside a two-byte UTF-8 sequence
    path.write_bytes(text.encode() + b"\n" + cut[:cut.index("µ".encode()) + 1])
    part = read_partial_records(path)
    assert part.header == header
    assert part.records == recs
    assert part.skipped_lines == 1


def test_an_empty_or_headerless_log_reads(tmp_path):
    path = tmp_path / PARTIAL_NAME
    path.write_text("")
    assert read_partial_records(path).records == []
    path.write_text('{"probe": "hbm", "i": 0}\n[1, 2]\n\n{"probe": "hbm", "i": 1}\n')
    part = read_partial_records(path)
    assert part.header is None and [r["i"] for r in part.records] == [0, 1]
    assert part.skipped_lines == 1  # a line that is JSON but not a record


def test_load_resume_reads_a_killed_run_then_an_interrupted_profile(tmp_path):
    header = {"kind": "ridgeline-partial", "device_id": "cpu", "device_name": "Test CPU",
              "probes": ["hbm", "matmul"], "quick": False, "options": {"hbm": {"sizes": [8]}},
              "command_line": ["ridgeline", "profile", "--device", "cpu"]}
    (tmp_path / PARTIAL_NAME).write_text(json.dumps(header) + '\n{"probe": "hbm", "i": 0}\n{"pro')
    state = load_resume(tmp_path)
    assert state.source.name == PARTIAL_NAME and state.skipped_lines == 1
    assert (state.device_id, state.device_name, state.probes, state.quick) == (
        "cpu", "Test CPU", ["hbm", "matmul"], False)
    assert state.options == {"hbm": {"sizes": [8]}} and state.records == [{"probe": "hbm", "i": 0}]
    assert state.command_line == header["command_line"] and not state.complete

    (tmp_path / PARTIAL_NAME).unlink()
    saved_profile(tmp_path / "profile.json", complete=False)
    state = load_resume(tmp_path)
    assert state.source.name == "profile.json" and not state.complete
    assert state.probes == ["hbm"] and state.quick is True and state.device_id == "cpu"
    assert [r["i"] for r in state.records] == [0]

    saved_profile(tmp_path / "profile.json", complete=True)
    assert load_resume(tmp_path).complete


def test_load_resume_with_nothing_to_resume_is_one_line(tmp_path):
    with pytest.raises(PartialError) as exc:
        load_resume(tmp_path)
    assert "nothing to resume" in one_line(exc)


# ------------------------------------------------------------------ in step with the rest

def test_the_known_outputs_match_what_ridgeline_writes():
    from ridgeline.reports import plots

    assert outputs.REPORT_FIGURES == tuple(f"{name}.png" for name in plots.FIGURES)
    assert issubclass(PartialError, RidgelineError)


# ------------------------------------------------------------------ `ridgeline report -o`

def test_report_refuses_a_folder_holding_another_profile(tmp_path, capsys):
    mine = saved_profile(tmp_path / "mine" / "profile.json")
    other = saved_profile(tmp_path / "other" / "profile.json")
    assert main(["report", str(mine), "-o", str(other.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another profile" in err
    assert sorted(p.name for p in other.parent.iterdir()) == sorted(["profile.json", LOCK_NAME])


def test_report_rewrites_its_own_folder_and_drops_stale_figures(tmp_path, capsys):
    prof = saved_profile(tmp_path / "profile.json")  # no gemv records: no gemv figure
    for name in ("report.md", "gemv_vs_batch.png", "notes.txt"):
        (tmp_path / name).write_text("old")
    assert main(["report", str(prof)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert "gemv_vs_batch.png" not in names and {"notes.txt", "report.html"} <= names
    assert (tmp_path / "report.md").read_text() != "old"


def test_report_of_a_killed_runs_log_says_resume(tmp_path, capsys):
    (tmp_path / PARTIAL_NAME).write_text('{"probe": "hbm"}\n{"probe": "hbm"}\n')
    assert main(["report", str(tmp_path / PARTIAL_NAME)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"ridgeline profile --resume {tmp_path}" in err


def test_report_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    prof = saved_profile(tmp_path / "profile.json")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report.md"))

    monkeypatch.setattr("ridgeline.reports.render.write_report", full)
    assert main(["report", str(prof)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ridgeline report: error: cannot write {tmp_path / 'report.md'}: "
                   "No space left on device")
