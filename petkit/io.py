"""Atomic file output: a reader never sees half a file, a crash never leaves one.

Every file petkit writes goes through :func:`atomic_path`: the data goes to a temporary file
beside the target (``.NAME.PID.RANDOM.tmp``), is flushed to disk, gets the permissions the
user's umask gives a new file (``mkstemp`` alone makes 0600, which hid runs from a team on a
shared server), and replaces the target in one ``rename``. A process killed mid-write leaves its
temporary file behind; the next write to the same target removes the temporaries of processes
that no longer run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from petkit.errors import PetkitError

_UMASK_LOCK = threading.Lock()
LEGACY_TMP_AGE_S = 3600  # temporaries without a pid (petkit <= 0.1) are stale after an hour


def umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries of writes to ``path`` whose process died; returns what went."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?[^.]+\.tmp$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if not match:
            continue
        pid = match.group(1)
        try:
            stale = (not _alive(int(pid))) if pid else time.time() - sibling.stat().st_mtime > LEGACY_TMP_AGE_S
            if stale:
                sibling.unlink()
                removed.append(sibling)
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _flush(tmp_path)
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _flush(path: Path) -> None:
    """Data on disk before the rename, so a power cut leaves the old file or the new one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_versioned_npz(path: str | Path, fmt: str, version: int, what: str, create_hint: str) -> dict:
    """The arrays of a petkit .npz file, after checking it exists, reads, and is ``fmt`` <= ``version``."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise PetkitError(f"{what} not found: {path}", create_hint)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as exc:
        raise PetkitError(f"cannot read {what} {path}: {exc}", f"the file is damaged or not a petkit {what}") from exc
    if str(arrays.get("format", "")) != fmt:
        raise PetkitError(f"{path} is not a petkit {what} file", create_hint)
    if int(arrays["version"]) > version:
        raise PetkitError(f"{path} is {what} version {int(arrays['version'])}; this petkit reads {version}", "upgrade petkit")
    return arrays


def refuse_overwrite(paths: list[Path], overwrite: bool, inputs: tuple = ()) -> None:
    """Outputs never replace existing files unless the user asked for it, and never (even then) a file
    the command reads (``inputs``: paths or None)."""
    for path in paths:
        for source in inputs:
            if source is not None and path.exists() and Path(source).exists() and path.resolve() == Path(source).resolve():
                raise PetkitError(f"{path} is an input of this command; writing the output there would replace it",
                                  "choose another output path (-o)")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise PetkitError(
            f"output already exists: {', '.join(existing)}",
            "choose another output path or pass --overwrite",
        )



LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a folder (``flock`` on ``FOLDER/.lock``, released when the process dies).

    Taken before anything is read, so two commands writing into one run folder cannot interleave:
    the second fails at once naming the first's pid. The lock file is removed on release, and the
    folder too when this lock created it and nothing else was written.
    """

    def __init__(self, folder: str | Path, what: str):
        import fcntl

        self.folder = Path(folder)
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]  # innermost first
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LOCK_NAME
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                raise PetkitError(f"{self.folder} is in use by another {what} (pid {holder or '?'})",
                                  "wait for it to finish, or choose another --name") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the holder removed the file between our open and our lock: lock the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: a waiter then sees a new inode and retries
        for folder in self.created:  # only when empty: the run failed before writing anything
            with contextlib.suppress(OSError):
                folder.rmdir()
        os.close(self.fd)
        self.fd = None
