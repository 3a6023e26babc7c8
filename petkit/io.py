"""Atomic file output: a reader never sees half a file, a crash never leaves one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from petkit.errors import PetkitError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


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


def refuse_overwrite(paths: list[Path], overwrite: bool) -> None:
    """Outputs never replace existing files unless the user asked for it."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise PetkitError(
            f"output already exists: {', '.join(existing)}",
            "choose another output path or pass --overwrite",
        )

