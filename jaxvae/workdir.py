"""The workdir as crash-safe state: atomic file writes, one writer at a time, log repair.

A run may be killed between any two instructions (kill -9, OOM, preemption). Everything here
keeps the workdir readable after that:
  - `atomic_path` / `write_json` / `write_text`: a file is replaced whole or not at all (write
    to a temporary name beside it, fsync, rename); `read_run`: the run file (`RUN_FILE`),
    read by the trainer, the modes, checkpoint restores and the API alike;
  - `Lock`: one training process per workdir (per process index in a multi-host run); the
    lock is an flock, so the kernel releases it when its holder dies, however it dies;
  - `is_disk_full` / `disk_full_error`: a write that failed for lack of space or quota, in
    whatever form it reaches the run (an OSError, or Orbax's and TensorStore's wrappers of
    it), as one error naming the path and what to free;
  - `repair_metrics`: on resume, metrics.jsonl is cut back to the rows of the checkpoint the
    run resumes from (a torn last line and rows of steps that will be redone are dropped), so
    no epoch or step appears twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time

from jaxvae import errors
from jaxvae import faults

LOCK_NAME = "jaxvae.lock"
RUN_FILE = "jaxvae_run.json"  # the run file: config, data record, why training stopped, ...


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str, fault: str | None = None):
  """Yields a temporary path beside `path` (same extension); renames it over `path` when the
  block ends normally, removes it when the block raises."""
  directory, name = os.path.split(os.path.abspath(path))
  stem, ext = os.path.splitext(name)
  tmp = os.path.join(directory, f".{stem}.tmp{os.getpid()}{ext}")
  try:
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    if fault:
      faults.point(fault, path)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str, fault: str | None = None) -> None:
  # backslashreplace: a file name that is not valid UTF-8 is written escaped, not a crash.
  with (
    atomic_path(path, fault) as tmp,
    open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f,
  ):
    f.write(text)


def write_json(path: str, value, fault: str | None = None, **kwargs) -> None:
  write_text(path, json.dumps(value, ensure_ascii=False, **kwargs), fault)


def read_run(workdir: str) -> dict:
  """The run file of `workdir` (config, data record, ...); CheckpointError in one line when
  the folder has none or it cannot be read."""
  path = os.path.join(workdir, RUN_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.CheckpointError(
      f"'{workdir}' is not a jaxvae workdir (no {RUN_FILE}); train one first"
    ) from None
  except (OSError, ValueError) as e:
    raise errors.CheckpointError(f"cannot read '{path}': {e}") from None


def tmp_name(path: str) -> str:
  """The temporary folder a build of `path` writes before renaming it to `path`."""
  return f"{path}.tmp.{socket.gethostname()}.{os.getpid()}"


def rename_into_place(tmp: str, path: str, marker: str) -> None:
  """Publishes the finished folder `tmp` as `path` in one rename. When another process (or
  host) published `path` first, its copy (which has `marker`) is kept and `tmp` removed."""
  try:
    os.replace(tmp, path)
  except OSError:
    if not os.path.exists(os.path.join(path, marker)):
      raise
    shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_tmp(path: str) -> None:
  """Removes the temporary folders of builds of `path` killed half-way: those of this host
  whose process is gone. Another host's build (shared storage) is never touched."""
  parent, name = os.path.split(path)
  if not os.path.isdir(parent):
    return
  prefix = f"{name}.tmp.{socket.gethostname()}."
  for entry in os.listdir(parent):
    pid = entry[len(prefix) :]
    if entry.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
      logging.info("Removing %s, left by an interrupted build", os.path.join(parent, entry))
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


_TMP_FILE = re.compile(r"^\..+\.tmp(\d+)(\.[^.]*)?$")  # what atomic_path names its files


def remove_stale_files(workdir: str) -> None:
  """Removes temporary files of `atomic_path` left in the workdir (top level and reports/)
  by a killed process; called by the run holding the workdir's lock."""
  folders = [workdir] + [d for d, _, _ in os.walk(os.path.join(workdir, "reports"))]
  for folder in folders:
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
      match = _TMP_FILE.match(name)
      if match and not _alive(int(match.group(1))):
        os.remove(os.path.join(folder, name))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


# ---------------------------------------------------------------------------------------------
# One writer per workdir
# ---------------------------------------------------------------------------------------------


def _holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode("utf-8", "replace")
  try:
    return json.loads(text) if text.strip() else {}
  except json.JSONDecodeError:
    return {}


class Lock:
  """An exclusive flock on `<workdir>/jaxvae.lock` (`jaxvae.lock.<i>` for process i > 0).

  The file records the holder's pid, host and start time. A second holder (another process,
  or a second `Lock` in this one) gets `WorkdirBusyError` naming the holder; a lock file left
  by a dead holder (the kernel dropped its flock with it) is taken over with a warning. Taken
  once per run by its entry point (`jaxvae.main` for training, tuning and `--clear`;
  experiments/train_all.py per model), never again below it.
  """

  def __init__(self, workdir: str, process_index: int = 0):
    name = LOCK_NAME if process_index == 0 else f"{LOCK_NAME}.{process_index}"
    self.path = os.path.join(os.path.abspath(workdir), name)
    self._fd: int | None = None
    self._held = False

  def acquire(self) -> Lock:
    assert not self._held, f"{self.path} is already held by this Lock"
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if not isinstance(e, BlockingIOError):  # ENOLCK, EOPNOTSUPP: a file system without flock
        logging.warning(
          "Cannot lock %s (%s): this file system has no flock, so a second "
          "writer in this workdir is not detected",
          self.path,
          e.strerror or e,
        )
        os.close(fd)
        self._held = True
        return self
      holder = _holder(fd)
      os.close(fd)
      who = (
        f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} (running "
        f"since {holder.get('started', '?')})"
        if holder
        else "another process"
      )
      raise errors.WorkdirBusyError(
        f"workdir '{os.path.dirname(self.path)}' is in use by {who}; wait for it to end or "
        "use another --workdir"
      ) from None
    previous = _holder(fd)
    if previous:
      logging.warning(
        "Taking over %s: its holder (process %s on host %s) is gone without releasing it (killed?)",
        self.path,
        previous.get("pid"),
        previous.get("host"),
      )
    record = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
    self._fd, self._held = fd, True
    return self

  def release(self) -> None:
    fd, self._fd, held, self._held = self._fd, None, self._held, False
    if not held or fd is None:  # not held, or never locked (no flock on this file system)
      return
    os.ftruncate(fd, 0)  # an empty file: released cleanly, nobody to warn about
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def ensure_writable(workdir: str) -> str:
  """Creates `workdir` and proves it writable, or raises WorkdirError naming it."""
  path = os.path.abspath(workdir)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_test.{socket.gethostname()}.{os.getpid()}")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    if is_disk_full(e):
      raise disk_full_error(e, path, "creating the workdir", None, None) from None
    raise errors.WorkdirError(
      f"--workdir '{workdir}' cannot be created or written "
      f"({e.strerror or e}); expected a writable folder"
    ) from None
  return path


# ---------------------------------------------------------------------------------------------
# metrics.jsonl on resume
# ---------------------------------------------------------------------------------------------


def repair_metrics(path: str, last_step: int) -> int:
  """Keeps the complete rows of `path` with step <= `last_step`; returns how many it dropped.

  Rows after the checkpoint a run resumes from are written again when their steps are redone;
  a kill may also leave a torn last line. Both go, atomically.
  """
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        row = json.loads(line) if line.endswith("\n") else None
      except json.JSONDecodeError:
        row = None
      if isinstance(row, dict) and row.get("step", 0) <= last_step:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    write_text(path, "".join(kept))
    logging.info(
      "metrics.jsonl: dropped %d rows written after step %d (they are redone)", dropped, last_step
    )
  return dropped


# ---------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the error reads when a library wrapped it (TensorStore under Orbax: "... Failed to write
# N bytes to file 13: No space left on device [os_error_code='28']").
DISK_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
_QUOTED_PATH = re.compile(r"\"(/[^\"]+)\"")


def _chain(exc: BaseException):
  """`exc` and what caused it (the context too, unless `raise ... from None` hid it)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def is_disk_full(exc: BaseException) -> bool:
  """Whether `exc` (or what caused it) is a write that failed for lack of space or quota."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
      return True
    if any(text in str(e) for text in DISK_FULL_TEXT):
      return True
  return False


def _failed_path(exc: BaseException) -> str | None:
  for e in _chain(exc):
    if isinstance(e, OSError) and e.filename:
      return os.fspath(e.filename)
    paths = _QUOTED_PATH.findall(str(e))
    if paths:  # a checkpoint's own folder, not the temporary file inside it that failed
      return paths[-1].split(".orbax-checkpoint-tmp")[0]
  return None


@contextlib.contextmanager
def removed_if_disk_full(tmp: str):
  """Removes the temporary folder `tmp` of a build that fails on a full disk: its space is
  given back at once rather than by the next build."""
  try:
    yield
  except Exception as e:
    if is_disk_full(e):
      shutil.rmtree(tmp, ignore_errors=True)
    raise


def free_mb(path: str) -> float:
  """Free megabytes on the file system of `path` (or of its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free / 2**20
  except OSError:
    return float("nan")


def disk_full_error(
  exc: BaseException, workdir: str, what: str, step: int | None, resume: int | None
) -> errors.DiskFullError:
  """One error for a full disk: the path that failed, the step, the space left, what to free
  and where the same command resumes."""
  path = _failed_path(exc) or workdir
  at = f" at step {step}" if step is not None else ""
  resume_at = (
    f"resumes from the checkpoint of step {resume}" if resume is not None else "starts again"
  )
  return errors.DiskFullError(
    f"no space left on the device while {what}{at}: writing '{path}' failed "
    f"({free_mb(path):.0f} MB free there). Free space on that disk (older runs, "
    "train.keep_checkpoints, the feature cache data.cache_dir) or move the workdir, then run "
    f"the same command again: it {resume_at}"
  )
