"""Named fault points: where a crash-safety test may kill, signal or fail a run, and only there.

`JAXVAE_FAULT=<point>:<n>[:<action>]` acts the n-th time the process passes `point(<point>)`
(n counts from 1, per process and point). Several faults are separated by commas. Actions:
  - `kill` (the default): SIGKILL. It runs no `finally`, no atexit and no flush: what the
    workdir holds then is exactly what a `kill -9`, an OOM kill or a lost node would leave;
  - `SIGTERM`, `SIGINT`: the signal a scheduler (SLURM, Kubernetes, a spot instance) or Ctrl-C
    sends, delivered to this process at that point, so preemption is tested at a known step;
  - `ENOSPC`: the write just made fails with "No space left on device" (an OSError raised
    there), as a full disk or an exhausted quota would make it fail.
With the variable unset, `point()` is one comparison.

Every place that writes run state passes a point right after a write that matters, so a test
can stop the run between any two of them (tests/test_faults.py kills at each in turn).
"""

from __future__ import annotations

import errno
import os
import signal

# name -> what has happened when the process passes it.
POINTS = {
  "run_file": "the run file's new content (at the start; with `resources` at the end) is "
  "written to its temporary name, not yet renamed",
  "train.step": "a train step was dispatched (mid-epoch, between checkpoints)",
  "metrics.line": "half of a metrics.jsonl line is written and flushed",
  "epoch.logged": "an epoch's record is in metrics.jsonl and TensorBoard; no checkpoint yet",
  "checkpoint.issued": "an asynchronous latest save has started and may be in flight",
  "checkpoint.latest": "a latest checkpoint (mid-epoch or end of epoch) has landed (seen when "
  "the next save starts or the run ends)",
  "checkpoint.best": "best/ is linked from the epoch's landed latest checkpoint; the older "
  "best step is not removed yet",
  "report.written": "the first picture of a periodic report is written, the rest is not",
  "finish": "training is done; the end-of-run curves and hparams are being written",
  "demo.clip": "a demo-corpus clip is written to the corpus' temporary folder",
  "store.chunk": "a chunk of features is written to a feature store's temporary folder",
  "store.commit": "a feature store is complete in its temporary folder, not yet published",
  "tokens.commit": "a token store is complete in its temporary folder, not yet published",
  "chorales.commit": "the chorale corpus is converted in its temporary folder, not published",
  "lyrics.commit": "a lyrics store's embeddings are renamed into place, its clips.json not",
  "download.chunk": "a chunk of a dataset archive is appended to its .part file",
  "extract.file": "one file of a verified archive is extracted into data.root",
  "download.record": "jaxvae_download.json is written; a downloaded archive not yet removed",
  "tune.trial": "a tuning trial reported an epoch to the study",
  "stop.saving": "a stop request (signal, train.max_runtime) is being honoured: its checkpoint "
  "save has started and is in flight",
  "export.file": "an exported artifact is written to its temporary name, not yet renamed",
}

ENV = "JAXVAE_FAULT"
ACTIONS = ("kill", "SIGTERM", "SIGINT", "ENOSPC")


def _parse(value: str | None) -> dict[str, list[tuple[int, str]]]:
  """{point: [(pass, action), ...]} of the variable's comma-separated faults."""
  targets: dict[str, list[tuple[int, str]]] = {}
  for spec in (value or "").split(","):
    if not spec.strip():
      continue
    parts = spec.strip().split(":")
    name, count = parts[0], parts[1] if len(parts) > 1 else ""
    action = parts[2] if len(parts) > 2 else "kill"
    if (
      len(parts) not in (2, 3)
      or name not in POINTS
      or not count.isdigit()
      or int(count) < 1
      or action not in ACTIONS
    ):
      raise ValueError(
        f"{ENV}={value!r}: expected <point>:<n>[:<action>] with n >= 1, action one of "
        f"{', '.join(ACTIONS)} and point one of {', '.join(POINTS)}"
      )
    targets.setdefault(name, []).append((int(count), action))
  return targets


_TARGETS = _parse(os.environ.get(ENV))
_passes: dict[str, int] = {}


def point(name: str, path: str = "") -> None:
  """Acts here when JAXVAE_FAULT names this point and pass (see the module doc). `path`: the
  file just written, named by a simulated ENOSPC."""
  if not _TARGETS or name not in _TARGETS:
    return
  _passes[name] = _passes.get(name, 0) + 1
  for count, action in _TARGETS[name]:
    if count != _passes[name]:
      continue
    if action == "kill":
      os.kill(os.getpid(), signal.SIGKILL)
    elif action == "ENOSPC":
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or name)
    else:
      os.kill(os.getpid(), getattr(signal, action))


def set_faults(value: str | None) -> None:
  """Replaces the faults of this process (tests that run jaxvae in-process)."""
  global _TARGETS
  _TARGETS = _parse(value)
  _passes.clear()
