"""A run folder belongs to one run: the lock that keeps a second writer out, and the check that a new run
never mixes its files with an earlier run's.

``fit`` (and ``train_recipe``, ``pretrain``) enter ``claim_run_folder`` before they write anything:

* **one writer**: a lock file (``fgvc.lock``: pid, host, start time) is created atomically
  (``O_CREAT | O_EXCL``); a second process gets "<folder> is in use by pid N on host H since T". A killed
  run leaves its lock behind: a lock of this host whose process no longer runs is taken over, with a warning
  (a lock of another host cannot be checked: the message says which file to delete). The lock is released
  when the run ends, also by an exception. It is re-entrant within a process (``train_recipe`` holds it
  while its ``fit`` runs). Under ``torchrun`` only rank 0 writes, so only rank 0 locks; every rank gets the
  same error.
* **one run**: a folder holding fgvc's run files (``log.jsonl``, ``train_state*``, ``*.safetensors``, a
  recipe's ``config.yaml`` / ``test.json`` / ``val.json``) is refused to a new run, naming the files, unless it continues
  that run (``resume=True``) or replaces it (``overwrite=True``: fgvc's own files of the old run are removed,
  after every check passed and before anything is written; other files are never touched).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import process_running

__all__ = [
    "FIT_FILES",
    "LOCK_FILE",
    "RECIPE_FILES",
    "RunFolder",
    "RunFolderInUse",
    "claim_run_folder",
    "run_files",
]

LOCK_FILE = "fgvc.lock"
#: What ``fit`` writes into its ``out_dir`` (glob patterns): removed by ``overwrite=True``.
FIT_FILES: tuple[str, ...] = ("log.jsonl", "last.safetensors", "best.safetensors", "train_state*", "tensorboard")
#: What ``train_recipe`` adds to each seed's folder.
RECIPE_FILES: tuple[str, ...] = (*FIT_FILES, "config.yaml", "test.json", "val.json")
#: Left by a run killed before its first checkpoint: ``resume=True`` that finds no state restarts over them.
_RESTART_FILES = ("log.jsonl", "tensorboard", "config.yaml")
_TENSORBOARD_EVENTS = "events.out.tfevents.*"


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock."""


def run_files(folder: str | os.PathLike, patterns: Sequence[str] = FIT_FILES) -> list[Path]:
    """fgvc's run files in ``folder`` (its ``patterns`` and any ``*.safetensors``), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in (*patterns, "*.safetensors") for p in folder.glob(pattern)}
    return sorted((p for p in found if p.name != LOCK_FILE), key=lambda p: p.name)


@dataclass
class RunFolder:
    """A claimed run folder (``claim_run_folder``); ``clear()`` removes the old run's files when asked to."""

    path: Path | None
    overwrite: bool = False
    patterns: tuple[str, ...] = FIT_FILES
    main: bool = True
    removed: list[Path] = field(default_factory=list)

    def clear(self) -> list[Path]:
        """With ``overwrite=True``: delete the earlier run's files (only those of ``patterns``; a
        ``tensorboard`` folder loses only its event files). Returns what was removed; a no-op otherwise."""
        if self.path is None or not self.overwrite or not self.main:
            return []
        for pattern in self.patterns:
            for p in sorted(self.path.glob(pattern)):
                if p.name == LOCK_FILE:
                    continue
                if p.is_dir() and p.name == "tensorboard":
                    for event in p.glob(_TENSORBOARD_EVENTS):
                        event.unlink()
                        self.removed.append(event)
                    if not any(p.iterdir()):
                        p.rmdir()
                elif p.is_file() or p.is_symlink():
                    p.unlink()
                    self.removed.append(p)
        return self.removed


@contextmanager
def claim_run_folder(
    folder: str | os.PathLike | None,
    *,
    resume: bool | str | os.PathLike = False,
    overwrite: bool = False,
    patterns: Sequence[str] = FIT_FILES,
    state_file: str = "train_state.safetensors",
    main: bool = True,
) -> Iterator[RunFolder]:
    """Lock ``folder`` for this run and check that it holds no other run's files (see the module docstring).

    ``resume``: ``fit``'s (True: this folder's ``state_file``; a path: a state to continue from).
    ``main``: whether this process writes (rank 0); the others neither lock nor check, but raise the same
    error as rank 0. Yields a ``RunFolder`` whose ``clear()`` the caller runs once its own checks passed.
    """
    if folder is None:
        yield RunFolder(None)
        return
    path = Path(folder)
    error: BaseException | None = None
    token = None
    if main:
        try:
            if overwrite and _continues_this_folder(path, resume, state_file):
                raise ValueError(
                    f"overwrite=True starts a new run in {path} and resume={resume!r} continues the one there: "
                    f"pass one of them"
                )
            path.mkdir(parents=True, exist_ok=True)
            token = _acquire(path)
            try:
                _check_owned(path, resume, overwrite, tuple(patterns), state_file)
            except BaseException:
                _release(path, token)
                raise
        except (OSError, ValueError, RuntimeError) as e:
            error = e
    error = _shared_error(error)
    if error is not None:
        raise error
    try:
        yield RunFolder(path, overwrite=overwrite, patterns=tuple(patterns), main=main)
    finally:
        if token is not None:
            _release(path, token)


def _continues_this_folder(path: Path, resume: Any, state_file: str) -> bool:
    if resume is True:
        return True
    if resume is False or resume is None:
        return False
    target = Path(resume)
    target = target / state_file if target.is_dir() else target
    return target.resolve().parent == path.resolve()


def _check_owned(path: Path, resume: Any, overwrite: bool, patterns: tuple[str, ...], state_file: str) -> None:
    """A new run only in a folder without another run's files (or one it replaces, ``overwrite``)."""
    if overwrite:
        return
    if _continues_this_folder(path, resume, state_file) and (path / state_file).is_file():
        return  # the run saved there continues
    files = run_files(path, patterns)
    if resume is True:  # no state yet: what a run killed before its first checkpoint leaves may stay
        files = [p for p in files if p.name not in _RESTART_FILES]
        if not files:
            return
        raise FileExistsError(
            f"{path} has no {state_file} to resume from but holds files of another run: "
            f"{_names(files)}; pass overwrite=True (--overwrite) to replace that run, or use another out_dir"
        )
    if files:
        raise FileExistsError(
            f"{path} holds files of another run: {_names(files)}; pass overwrite=True (--overwrite) to replace "
            f"that run, or resume=True (--resume) to continue it, or use another out_dir"
        )


def _names(files: list[Path]) -> str:
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in files[:8])
    return shown + (f" and {len(files) - 8} more" if len(files) > 8 else "")


def _shared_error(error: BaseException | None) -> BaseException | None:
    """Rank 0's error on every rank (a refusal on rank 0 alone would leave the others waiting)."""
    from .distributed import all_gather_objects, get_rank, is_distributed

    if not is_distributed():
        return error
    message = all_gather_objects(None if error is None else (type(error).__name__, str(error)))[0]
    if get_rank() == 0 or message is None:
        return error
    kind = {"FileExistsError": FileExistsError, "ValueError": ValueError,
            "RunFolderInUse": RunFolderInUse}.get(message[0], RuntimeError)
    return kind(message[1])


# ------------------------------------------------------------------------------------------- the lock
#: Locks this process holds: resolved folder -> [token, depth] (re-entrant).
_HELD: dict[Path, list[Any]] = {}


def _acquire(path: Path) -> str:
    """Create ``path/fgvc.lock`` atomically (or take over a stale one); returns this claim's token."""
    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return _HELD[key][0]
    lock = path / LOCK_FILE
    token = uuid.uuid4().hex
    record = dict(pid=os.getpid(), host=socket.gethostname(),
                  started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), token=token)
    for _ in range(3):  # a stale lock taken over by another process meanwhile: look again
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if not _is_stale(holder):
                raise RunFolderInUse(_in_use(path, lock, holder)) from None
            _take_over(path, lock, holder)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        _HELD[key] = [token, 1]
        return token
    raise RunFolderInUse(f"{path}: could not take over its stale lock {lock}; delete it if no run is using {path}")


def _release(path: Path, token: str) -> None:
    """Drop one claim; the last removes the lock file, if it is still this process's."""
    key = path.resolve()
    entry = _HELD.get(key)
    if entry is None or entry[0] != token:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _HELD[key]
    lock = path / LOCK_FILE
    if (_read_lock(lock) or {}).get("token") == token:
        lock.unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock's record; None when it cannot be read (removed meanwhile, or cut short)."""
    try:
        record = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_stale(holder: dict[str, Any] | None) -> bool:
    """Left by a killed run: written on this host by a process that no longer runs (or by an earlier
    process with this one's pid, as in a restarted container)."""
    if holder is None or holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder["pid"] == os.getpid():
        return all(entry[0] != holder.get("token") for entry in _HELD.values())
    return not process_running(holder["pid"])


def _take_over(path: Path, lock: Path, holder: dict[str, Any]) -> None:
    """Move the stale lock aside (atomically) and warn; a fresh lock moved by mistake is put back."""
    aside = lock.with_name(f".{LOCK_FILE}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # already taken over by another process
    if _read_lock(aside) != holder:  # another process took it over first and this moved its fresh lock
        shutil.move(aside, lock)
        return
    aside.unlink(missing_ok=True)
    warnings.warn(
        f"{path}: took over the lock of pid {holder['pid']} (since {holder.get('started')}), which no longer "
        f"runs (a killed run)", stacklevel=5,
    )


def _in_use(path: Path, lock: Path, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return (f"{path} is in use by another run (its lock {lock} cannot be read); if no run is using the "
                f"folder, delete {lock}")
    return (
        f"{path} is in use by pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}; "
        f"wait for that run to end or use another out_dir (if that process is gone, delete {lock})"
    )
