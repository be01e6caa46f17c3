"""Where a run's wall time goes (jaxvae/training/timing.py), the compilation cache and the
asynchronous checkpoints' best-by-hard-links, checked on the suite's short run."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.training import timing


def test_phases_count_every_second_once_and_compilation_apart():
  phases = timing.Phases()
  try:
    with phases("evaluation"):
      time.sleep(0.05)
      f = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())
      f(np.ones(17, np.float32)).block_until_ready()  # a fresh program: traced and compiled
      with phases("checkpoints"):  # nested: pauses evaluation
        time.sleep(0.05)
    phases.end_epoch()
    with phases("train_steps"):
      f(np.ones(17, np.float32)).block_until_ready()  # cached in memory: no compilation
    summary = phases.summary()
  finally:
    phases.close()
  assert summary["compiles"] == 1 and summary["compile_s"] > 0
  assert 0.05 <= summary["evaluation_s"] < 0.05 + summary["compile_s"]
  assert 0.05 <= summary["checkpoints_s"] < 0.1
  parts = sum(summary[f"{p}_s"] for p in timing.PHASES) + summary["compile_s"]
  # Each figure is rounded to the millisecond: the sum may be off by half a ms per figure.
  assert parts == pytest.approx(summary["total_s"], abs=5e-4 * (len(timing.PHASES) + 2))
  first = summary["epochs"][0]
  assert first["compile"] == pytest.approx(summary["compile_s"], abs=1e-3)
  assert len(summary["epochs"]) == 1
  with pytest.raises(ValueError, match="unknown phase"):
    with phases("lunch"):
      pass


def test_the_run_file_says_where_the_time_went(short_run):
  t = json.load(open(os.path.join(short_run, "jaxvae_run.json")))["timing"]
  assert len(t["epochs"]) == 2 and t["train_steps_s"] > 0 and t["compiles"] > 0
  assert t["finished_at"] > t["started_at"]
  shares = sum(t[f"{p}_share"] for p in (*timing.PHASES, "compile"))
  assert shares == pytest.approx(1.0, abs=5e-3)


def test_best_checkpoint_is_hard_links_to_the_latest_one(short_run):
  """No second full save: best/<step> shares its files with checkpoints/<step>."""
  best = os.path.join(short_run, "best")
  (step,) = [n for n in os.listdir(best) if n.isdigit()]
  latest = os.path.join(short_run, "checkpoints", step)
  pairs = 0
  for folder, _, files in os.walk(os.path.join(best, step)):
    for name in files:
      mine = os.path.join(folder, name)
      theirs = os.path.join(latest, os.path.relpath(mine, os.path.join(best, step)))
      assert os.stat(mine).st_ino == os.stat(theirs).st_ino, mine
      pairs += 1
  assert pairs > 3
