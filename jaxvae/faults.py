"""Named fault points: where a crash-safety test may kill a run, and only there.

`JAXVAE_FAULT=<point>:<n>` makes the process kill itself with SIGKILL the n-th time it passes
`point(<point>)` (n counts from 1, per process). SIGKILL runs no `finally`, no atexit and no
flush: what the workdir holds then is exactly what a `kill -9`, an OOM kill or a lost node
would leave. With the variable unset, `point()` is one comparison.

Every place that writes run state passes a point right after a write that matters, so a test
can stop the run between any two of them (tests/test_faults.py kills at each in turn).
"""

from __future__ import annotations

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
}

ENV = "JAXVAE_FAULT"


def _parse(value: str | None) -> tuple[str, int] | None:
  if not value:
    return None
  name, _, count = value.rpartition(":")
  if name not in POINTS or not count.isdigit() or int(count) < 1:
    raise ValueError(
      f"{ENV}={value!r}: expected <point>:<n> with n >= 1 and point one of {', '.join(POINTS)}"
    )
  return name, int(count)


_TARGET = _parse(os.environ.get(ENV))
_passes = 0


def point(name: str) -> None:
  """Kills this process here when JAXVAE_FAULT names this point and pass."""
  global _passes
  if _TARGET is None or name != _TARGET[0]:
    return
  _passes += 1
  if _passes == _TARGET[1]:
    os.kill(os.getpid(), signal.SIGKILL)
