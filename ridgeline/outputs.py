"""Output folders and files that never lose data.

    with prepare_output_dir("ridgeline-out", force=False, what="profile") as out:
        ...                       # checked, writable, locked: now measure
        out.clear()               # remove the outputs this run replaces, just before writing
        atomic_write_text(out.path / "profile.json", text)

Rules, all checked before anything is measured:
- `-o` is a folder or can be created; an existing file, `/proc/x`, a read-only
  mount or a path under a file is one line (`OutputError`), never a traceback.
- A folder already holding measured data (profile.json, an unfinished run's
  records.partial.jsonl, validation.json) is refused unless `force=True`; which
  files count depends on what the command writes (OUTPUT_SETS, PROTECTED).
  `clear()` removes only ridgeline's own outputs (the names below), never other
  files, so stale figures do not sit beside a new report.
- One writer per folder: `fcntl.flock` on DIR/.ridgeline.lock, non-blocking, held
  for the whole run. The lock file stays in place (deleting it would let two
  runs lock two different inodes); it holds the PID of the run holding it.
- Files are written to a temp file in the same folder, fsynced, then renamed over
  the target (`os.replace` is atomic): a Ctrl-C or a full disk leaves the old
  file or the new one, never half of one, and no temp file behind.
The record log of a running profile (records.partial.jsonl) and `--resume` live
in ridgeline.partial.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ridgeline.errors import RidgelineError
from ridgeline.partial import PARTIAL_NAME, read_partial_records

LOCK_NAME = ".ridgeline.lock"
# figure names of ridgeline.reports.plots.FIGURES (a test keeps the two in step)
REPORT_FIGURES = ("roofline.png", "bandwidth_vs_size.png", "matmul_vs_size.png",
                  "gemv_vs_batch.png")
OUTPUT_SETS: dict[str, tuple[str, ...]] = {
    "profile": ("profile.json", "records.csv", PARTIAL_NAME),
    "report": ("report.md", "report.html", *REPORT_FIGURES),
    "validation": ("validation.json", "validation.md", "validation.png"),
}
# What each command rewrites. A new profile replaces its report, and the validation
# beside it too: that was scored against the profile being replaced.
REWRITES: dict[str, tuple[str, ...]] = {
    "profile": ("profile", "report", "validation"),
    "validation": ("validation",),
    "report": ("report",),
}
# Measured data: never replaced without --force (a report is derived, so it is not here)
PROTECTED = ("profile.json", PARTIAL_NAME, "validation.json")


class OutputError(RidgelineError):
    """An output folder or file cannot be used or written; says which and why."""


# ------------------------------------------------------------------ atomic writes

def _write_all(fd: int, data: bytes) -> None:
    """Every byte to fd (os.write may write fewer); a seam for tests to simulate a full disk."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _umask() -> int:
    # mkstemp makes 0600 files; a profile should get the mode any other file would get.
    # Reading the umask means setting it: fine in a CLI, where no other thread creates files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename).

    Any OSError (ENOSPC, EACCES, EROFS, ...) removes the temp file and becomes one
    line: "cannot write DIR/profile.json: No space left on device".
    """
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:  # also on Ctrl-C: never leave a temp file behind
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; best effort (some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_temp_of(name: str, targets: tuple[str, ...]) -> bool:
    """A temp file our writers leave only when killed: .NAME.xxxx.tmp, or the older NAME.tmp."""
    return name.endswith(".tmp") and any(name.startswith(f".{t}.") or name == f"{t}.tmp"
                                         for t in targets)


# ------------------------------------------------------------------ the lock

class DirLock:
    """flock on DIR/.ridgeline.lock: one ridgeline writer per folder (non-blocking)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        self.note: str | None = None  # set when the filesystem cannot lock

    def acquire(self) -> "DirLock":
        try:
            # no O_TRUNC: the holder's PID must survive a second run opening the file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {self.path}: "
                              f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"PID {holder}" if holder else "another process"
                raise OutputError(f"{self.path.parent} is in use by another ridgeline run ({who} "
                                  "holds its lock); wait for it to finish, or use another -o") \
                    from None
            # e.g. ENOLCK on some network filesystems: run unlocked rather than not at all
            self.note = f"{self.path.parent} cannot be locked ({exc.strerror}): run unprotected"
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # a stale PID would mislead the next error message
            except OSError:
                pass
            os.close(fd)  # closing releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------ the folder

@dataclass
class OutputDir:
    """A checked, writable, locked output folder; `clear()` removes what this run replaces."""

    path: Path
    what: str
    lock: DirLock
    created: bool = False
    notes: list[str] = field(default_factory=list)

    def replaced(self) -> list[Path]:
        """The ridgeline outputs already here that this run rewrites (removed by clear())."""
        names: list[str] = []
        for group in REWRITES[self.what]:
            names += OUTPUT_SETS[group]
        found = [self.path / n for n in names if (self.path / n).is_file()]
        # a figure name alone is no proof the file is ours: only beside a ridgeline report
        if not any(p.name in ("report.md", "report.html") for p in found):
            found = [p for p in found if p.name not in REPORT_FIGURES]
        try:
            temps = [p for p in self.path.iterdir() if p.is_file() and _is_temp_of(p.name, names)]
        except OSError:
            temps = []
        return found + temps

    def clear(self, keep: tuple[str, ...] = ()) -> list[Path]:
        """Remove the outputs this run replaces (never other files); returns what went."""
        return [p for p in self.replaced() if p.name not in keep and remove_file(p)]

    def close(self) -> None:
        self.lock.release()
        if self.created:  # a run that failed before writing leaves no empty folder behind
            try:
                if [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
                    (self.path / LOCK_NAME).unlink()
                    self.path.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_output_dir(path: str | Path, *, force: bool, what: str, resume: bool = False,
                       input_profile: str | Path | None = None) -> OutputDir:
    """Check and lock an output folder before anything is measured; one-line OutputError.

    what: "profile", "validation" or "report" (which outputs conflict and get replaced).
    resume: the folder is the one `profile --resume` continues (it must exist; its
    unfinished run is the point, not a conflict). input_profile (report): the
    profile being rendered; the folder may hold that one, never another.
    """
    if what not in REWRITES:
        raise ValueError(f"unknown output kind {what!r}")
    folder = Path(path)
    created = False
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; -o takes a folder")
    if not folder.exists():
        if resume:
            raise OutputError(f"--resume {folder}: no such folder")
        try:
            folder.mkdir(parents=True)
            created = True
        except FileExistsError:  # created meanwhile by someone else: fine if it is a folder
            if not folder.is_dir():
                raise OutputError(f"{folder} is a file; -o takes a folder") from None
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {folder}: "
                              f"{exc.strerror or exc}") from None
    _check_writable(folder)
    lock = DirLock(folder).acquire()
    out = OutputDir(folder, what, lock, created=created)
    if lock.note:
        out.notes.append(lock.note)
    try:
        if not resume:
            _check_conflicts(folder, what, force, input_profile)
    except BaseException:
        out.close()
        raise
    return out


def make_folder(path: str | Path) -> Path:
    """The folder at `path`, created with its parents; one line (OutputError) when it is a
    file or cannot be made."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; -o takes a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {folder}: "
                          f"{exc.strerror or exc}") from None
    return folder


def remove_file(path: Path) -> bool:
    """Remove an output this run replaces; False when it was already gone, one line
    (OutputError) when it cannot be removed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"cannot remove the old {path}: {exc.strerror or exc}") from None
    return True


def _check_writable(folder: Path) -> None:
    """Create and remove a probe file: permissions, read-only mounts, /proc and a full inode
    table all show up here, before minutes of measuring."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ridgeline-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {folder}: "
                          f"{exc.strerror or exc}") from None


def _check_conflicts(folder: Path, what: str, force: bool,
                     input_profile: str | Path | None) -> None:
    if what == "report":
        # a report is derived data: rewritten freely, but only beside its own profile
        held = folder / "profile.json"
        if held.is_file() and not (input_profile and _same_file(held, Path(input_profile))):
            raise OutputError(f"{folder} holds another profile ({describe_existing(held)}); "
                              "a report there would sit beside the wrong profile: use another -o")
        return
    if force:
        return
    rewritten = {n for g in REWRITES[what] for n in OUTPUT_SETS[g]}
    for name in PROTECTED:
        held = folder / name
        if name not in rewritten or not held.is_file():
            continue
        if name == PARTIAL_NAME:
            raise OutputError(f"{folder} holds an unfinished run ({describe_existing(held)}); "
                              f"continue it with `ridgeline profile --resume {folder}`, or use "
                              "--force to discard it, or another -o")
        incomplete = name == "profile.json" and _json_field(held, "complete") is False
        hint = f"continue it with --resume {folder}, " if incomplete else ""
        kind = {"profile.json": "an incomplete profile" if incomplete else "a profile",
                "validation.json": "a validation"}[name]
        raise OutputError(f"{folder} already holds {kind} ({describe_existing(held)}); "
                          f"{hint}use --force to replace it, or another -o")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _json_field(path: Path, key: str) -> Any:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def describe_existing(path: Path) -> str:
    """"from 2025-01-02T03:04:05+00:00 on NVIDIA H100" for what a file holds; best effort."""
    if path.name == PARTIAL_NAME:
        part = read_partial_records(path)
        device = (part.header or {}).get("device_name")
        return f"{PARTIAL_NAME}: {len(part.records)} records" + (f" on {device}" if device else "")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"{path.name}, unreadable"
    if not isinstance(data, dict):
        return path.name
    prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else {}
    when = prov.get("timestamp_utc") or "an unknown time"
    device = prov.get("device")
    name = device.get("name") if isinstance(device, dict) else data.get("device")
    what = f"{data['model']} " if isinstance(data.get("model"), str) else ""
    return f"{path.name}: {what}from {when}" + (f" on {name}" if name else "")
