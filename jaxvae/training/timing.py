"""Where a run's wall time goes: data (the store), set-up (model, state), compilation, train
steps, evaluation, checkpoints, reports and logging, each measured where it happens.

`Phases` is a stack of named phases: entering one pauses the one around it, so every second
is counted once. JAX reports each compilation (tracing, lowering to MLIR, XLA compile or
persistent-cache load) through `jax.monitoring`; those seconds are taken out of the phase
they happened in and counted as `compile`, so `train_steps` is the steps alone even on the
first, compiling, step. Costs two clock reads per phase change; no device sync.
"""

from __future__ import annotations

import contextlib
import threading
import time

import jax

PHASES = (
  "data",
  "setup",
  "train_steps",
  "evaluation",
  "checkpoints",
  "reports",
  "logging",
  "other",
)
_COMPILE_EVENTS = (
  "/jax/core/compile/jaxpr_trace_duration",
  "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "/jax/core/compile/backend_compile_duration",
)


class Phases:
  """Wall seconds per phase of one run, compilation counted apart (see the module doc)."""

  def __init__(self):
    self.started_at = time.time()
    self.seconds = dict.fromkeys(PHASES, 0.0)
    self.compile_seconds = 0.0
    self.compiles = 0
    self.cache_hits = 0
    self.cache_misses = 0
    self._stack = ["other"]
    self._epochs: list[dict] = []  # per epoch: seconds by phase (and compile) in that epoch
    self._mark = self._totals()
    self._since = time.perf_counter()
    self._thread = threading.get_ident()
    self._closed = False
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)

  @contextlib.contextmanager
  def __call__(self, name: str):
    """`with phases("evaluation"): ...` counts the block's wall time to `name`."""
    if name not in self.seconds:
      raise ValueError(f"unknown phase {name!r}; expected one of {', '.join(PHASES)}")
    self._switch(name)
    try:
      yield
    finally:
      self._switch(None)

  def _switch(self, push: str | None) -> None:
    self._flush()
    if push is None:
      self._stack.pop()
    else:
      self._stack.append(push)

  def _flush(self) -> None:
    """Counts the time since the last change to the phase now open."""
    now = time.perf_counter()
    self.seconds[self._stack[-1]] += now - self._since
    self._since = now

  def _totals(self) -> dict:
    return dict(self.seconds, compile=self.compile_seconds)

  def end_epoch(self) -> None:
    """Closes an epoch: its seconds by phase go to `summary()["epochs"]`."""
    self._flush()
    now = self._totals()
    self._epochs.append({k: round(now[k] - self._mark[k], 3) for k in now})
    self._mark = now

  def _on_duration(self, event: str, seconds: float, **kwargs) -> None:
    # Compilations on other threads (none in the trainer) did not pause this one's phase.
    if event in _COMPILE_EVENTS and threading.get_ident() == self._thread and not self._closed:
      self.compile_seconds += seconds
      self.seconds[self._stack[-1]] -= seconds
      self.compiles += event == _COMPILE_EVENTS[-1]

  def _on_event(self, event: str, **kwargs) -> None:
    if self._closed:
      return
    if event == "/jax/compilation_cache/cache_hits":
      self.cache_hits += 1
    elif event == "/jax/compilation_cache/cache_misses":
      self.cache_misses += 1

  def summary(self) -> dict:
    """{`<phase>_s`, `compile_s`, `total_s`, `<phase>_share` (of total), `compiles`,
    `cache_hits`, `cache_misses`, `started_at`, `finished_at` (time.time()), `epochs` (per
    epoch: {phase: seconds}, compile included)} so far."""
    self._flush()
    out = {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
    out["compile_s"] = round(self.compile_seconds, 3)
    total = sum(self.seconds.values()) + self.compile_seconds
    out["total_s"] = round(total, 3)
    for k in (*PHASES, "compile"):
      out[f"{k}_share"] = round(out[f"{k}_s"] / total, 4) if total > 0 else 0.0
    out |= {
      "compiles": self.compiles,
      "cache_hits": self.cache_hits,
      "cache_misses": self.cache_misses,
      "started_at": self.started_at,
      "finished_at": time.time(),
      "epochs": self._epochs,
    }
    return out

  def close(self) -> None:
    """Stops listening (JAX keeps listeners for the life of the process)."""
    if self._closed:
      return
    self._closed = True
    with contextlib.suppress(Exception):
      jax.monitoring.unregister_event_duration_listener(self._on_duration)
    with contextlib.suppress(Exception):
      jax.monitoring.unregister_event_listener(self._on_event)
