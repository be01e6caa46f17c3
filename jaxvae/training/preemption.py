"""Stop requests: the signals a scheduler sends before it kills a job, and a wall-time budget.

SLURM, Kubernetes and spot instances send SIGTERM some seconds before SIGKILL; a person sends
SIGINT (Ctrl-C). `StopRequests` catches both for a whole training run. Before the loop's first
step (data loading, compiling, restoring) there is nothing new to save: the handler raises
`Stopped` at once. While the loop runs (`armed`), a signal only sets a flag: the loop finishes
the step it is in, saves a checkpoint of that step, waits for it to land, flushes its logs and
raises `Stopped`. `jaxvae.main` turns `Stopped` into one line and exit status `EXIT_STOPPED`.
A second signal while that happens ends the process at once with the signal's default action
(as a SIGKILL would): Orbax writes every checkpoint under a temporary name, so the previous
checkpoint stays the resume point.

`train.max_runtime` (a scheduler slot: seconds, or '90m', '4h', '1:30:00') is a stop request
too, counted from the start of the process (`PROCESS_START`: imports and data loading
included, and every trial of `--mode=tune`): the loop asks `expired(reserve_s)` after each
step, with the time it expects to need to stop (steps to the next point where it may stop, the
save, a validation), and stops while the budget still covers that.

With several processes every process must stop at the same step (a checkpoint save is
collective): `agree` makes a stop seen by any process a stop of all, at the steps where the
hosts meet anyway (log steps and epoch ends). Light: imports only the standard library (the
training loop builds it from the config: `config.base.parse_duration(train.max_runtime)`).
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import os
import signal
import threading
import time

# The exit status of a run that stopped on request with its state saved (sysexits' EX_TEMPFAIL:
# "try again later"): re-running the same command resumes it. Wrap a job script in
# `until python -m jaxvae.main ...; [ $? -ne 75 ]; do :; done` to chain slots.
EXIT_STOPPED = 75
SIGNALS = ("SIGTERM", "SIGINT")
PROCESS_START = time.monotonic()  # this module is imported when the process starts (main)


class Stopped(Exception):
  """A run that stopped on request after saving its state at `step` (not an error)."""

  def __init__(self, reason: str, step: int | None):
    self.reason = reason
    self.step = step
    at = f"at step {step}" if step is not None else "before training started (nothing to save)"
    super().__init__(f"stopped by {reason} {at}; re-run the same command to resume")


class StopRequests:
  """Catches SIGTERM and SIGINT while entered (main thread only) and keeps the budget.

  `requested()` is the reason a stop was asked for ('SIGTERM', 'SIGINT', 'train.max_runtime')
  or None; reading it is free, so the loop asks after every step.
  """

  def __init__(
    self,
    max_runtime_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    start: float | None = None,
  ):
    self.max_runtime_s = float(max_runtime_s or 0.0)
    self.clock = clock
    self.start = PROCESS_START if start is None else start
    self.reason: str | None = None
    self.armed = False  # the loop has started: a signal sets `reason` instead of raising
    self._previous: dict[int, object] = {}

  def __enter__(self) -> StopRequests:
    if threading.current_thread() is threading.main_thread():
      for name in SIGNALS:
        number = getattr(signal, name)
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
    self._previous.clear()

  def _handle(self, number: int, frame) -> None:
    del frame
    name = signal.Signals(number).name
    if not self.armed and self.reason is None:
      self.reason = name
      raise Stopped(name, None)
    if self.reason is None or self.reason == "train.max_runtime":
      self.reason = name
      logging.warning(
        "Received %s: finishing the current step and saving a checkpoint (send it again to "
        "stop at once; the previous checkpoint then stays the resume point)",
        name,
      )
      return
    logging.warning("Received %s again: stopping now, without waiting for the save", name)
    for handler in logging.getLogger().handlers:
      handler.flush()
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)

  def elapsed(self) -> float:
    return self.clock() - self.start

  def expired(self, reserve_s: float) -> bool:
    """Whether the budget no longer covers `reserve_s` more seconds (and sets the reason)."""
    if (
      self.reason is None
      and self.max_runtime_s
      and self.elapsed() + reserve_s >= (self.max_runtime_s)
    ):
      self.reason = "train.max_runtime"
      logging.info(
        "train.max_runtime (%g s) has %.0f s left and stopping takes about %.0f s: saving a "
        "checkpoint and stopping",
        self.max_runtime_s,
        max(self.max_runtime_s - self.elapsed(), 0.0),
        reserve_s,
      )
    return self.reason is not None

  def requested(self) -> str | None:
    return self.reason


def agree(local: str | None, gather: Callable[[int], list[int]] | None) -> str | None:
  """The stop reason every process adopts: this process's, or, when another process has one,
  'a stop request on process i'. `gather(flag)` returns every process's flag (None: one
  process)."""
  if gather is None:
    return local
  flags = gather(1 if local else 0)
  if local:
    return local
  for index, flag in enumerate(flags):
    if flag:
      return f"a stop request on process {index}"
  return None
