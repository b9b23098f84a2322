"""Small file helpers shared by the library: atomic writes, YAML reads, UTC timestamps and the
workspace's locks (an exclusive ``flock`` on a file under ``data/locks/``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

LOCKS_DIR = "locks"  # under the workspace's data/
# libyaml's parser where PyYAML was built with it (its wheels are): about ten times faster than
# yaml.safe_load (a promoted record is read at every dashboard rebuild)
_FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_HOLDER_PID = re.compile(r"\bpid ([0-9]+)\b")


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``: the same value or the same error, faster on the records the library
    writes with ``yaml.safe_dump`` (a promoted record). libyaml parses it unless it holds a tab or a
    ``!``, the two places libyaml differs (it accepts a tab after a value, reads a bare ``!`` as ''
    rather than None; a hand-edited record may hold either); text libyaml refuses is parsed again by
    PyYAML, whose error quotes the line with a caret under the fault."""
    if "\t" in text or "!" in text:
        return yaml.safe_load(text)
    try:
        return yaml.load(text, Loader=_FAST_SAFE_LOADER)
    except yaml.YAMLError:
        return yaml.safe_load(text)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; reports are for reading
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def write_parquet(frame, path: Path) -> Path:
    """Write a DataFrame to parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp)
    return Path(path)


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_bytes(Path(path), json.dumps(payload, indent=2, default=str).encode())
    return Path(path)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Python's and the installed packages' versions (packages not installed are left out)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def git_commit(repo: Path) -> dict[str, str | bool | None]:
    """The code commit the run used, and whether the working tree had changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def lock_path(name: str) -> Path:
    """``data/locks/<name>.lock`` in the workspace."""
    from research_lib import paths

    return paths.data_dir() / LOCKS_DIR / f"{name}.lock"


@contextmanager
def flock(path: Path, *, blocking: bool, holder: str | None = None) -> Iterator[int | None]:
    """Hold an exclusive ``flock`` on ``path`` for the block: yields its descriptor, or None when
    another holder has it and ``blocking`` is false. The lock goes with the descriptor, closed at
    the end of the block (or by the kernel if the process dies).

    ``holder`` (e.g. ``"pid 123 since ..."``) is written into the file while the lock is held, for
    whoever finds it taken (`lock_holder_pid`), and erased before it is released.
    """
    import fcntl  # POSIX only: imported here so that the rest of this module works everywhere

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        if held and holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        try:
            yield fd if held else None
        finally:
            if held and holder is not None:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def lock_holder_pid(path: Path) -> int | None:
    """The pid written into a lock file by its holder (`flock`'s ``holder``), or None."""
    try:
        found = _HOLDER_PID.search(Path(path).read_text(errors="replace"))
    except OSError:
        return None
    return int(found.group(1)) if found else None
