"""Runs that survive a cluster: a scheduler's signals (SIGTERM, SIGINT) and wall-time budget
(`train.max_runtime`) stop a run at a step with its state saved, and a full disk ends it with
one line. Each stop is injected at a named fault point (`JAXVAE_FAULT=<point>:<n>:<action>`),
and each stopped run, run again, ends bitwise where an uninterrupted run ends."""

import json
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
from test_faults import _metrics
from test_faults import _train_args
from test_faults import assert_same_checkpoints
from test_train import _cli

from conftest import ROOT
from jaxvae import errors
from jaxvae import faults
from jaxvae import main as main_lib
from jaxvae import workdir as workdir_lib
from jaxvae.config import base as config_base
from jaxvae.training import metrics as metrics_lib
from jaxvae.training import preemption

# The short run without its per-step checkpoints: a stop must save its own step.
EPOCH_SAVES = {"train.checkpoint_every_steps": "0"}
REPORTS = {"train.image_every_epochs": "1", "train.report_samples": "False"}


def _same_end_as(workdir, short_run):
  """The workdir's latest and best checkpoints are bitwise those of the uninterrupted run,
  and metrics.jsonl has each epoch and step once."""
  assert_same_checkpoints(workdir, short_run)
  assert _metrics(workdir) == ([1, 2], [1, 2, 3, 4])
  # A resumed epoch's record covers all its steps (those before a mid-epoch stop too).
  assert _train_means(workdir) == _train_means(short_run)


def _train_means(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  epochs = [r for r in rows if r.get("kind") == "epoch"]
  return [{k: v for k, v in r.items() if k.startswith("train/")} for r in epochs]


def _saved(workdir):
  folder = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


# ---------------------------------------------------------------------------------------------
# The pieces
# ---------------------------------------------------------------------------------------------


def test_fault_actions_parse_and_refuse_unknown_ones():
  assert faults._parse("train.step:3:SIGTERM,stop.saving:1:SIGTERM") == {
    "train.step": [(3, "SIGTERM")],
    "stop.saving": [(1, "SIGTERM")],
  }
  assert faults._parse("metrics.line:2") == {"metrics.line": [(2, "kill")]}
  with pytest.raises(ValueError, match="action one of"):
    faults._parse("train.step:1:SIGHUP")
  faults.set_faults("metrics.line:2:ENOSPC")
  try:
    faults.point("metrics.line", "/w/metrics.jsonl")  # the first pass: nothing
    with pytest.raises(OSError) as info:
      faults.point("metrics.line", "/w/metrics.jsonl")
    assert workdir_lib.is_disk_full(info.value) and info.value.filename == "/w/metrics.jsonl"
  finally:
    faults.set_faults(None)


@pytest.mark.parametrize(
  "text, seconds",
  [
    ("0", 0.0),
    ("3600", 3600.0),
    ("90m", 5400.0),
    ("4h", 14400.0),
    ("1:30:00", 5400.0),
    ("2:05", 125.0),
    (45, 45.0),
  ],
)
def test_max_runtime_durations(text, seconds):
  assert config_base.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-5", "1:xx", "4 hours"])
def test_a_bad_max_runtime_names_the_key(tmp_path, tiny_overrides, bad, capsys):
  assert _cli(tmp_path, dict(tiny_overrides, **{"train.max_runtime": bad}), mode="summary") == 1
  assert "config key 'train.max_runtime'" in capsys.readouterr().err


def test_every_process_stops_when_any_process_is_asked():
  assert preemption.agree(None, None) is None
  assert preemption.agree("SIGTERM", None) == "SIGTERM"
  assert preemption.agree(None, lambda flag: [0, flag, 1]) == "a stop request on process 2"
  assert preemption.agree("SIGINT", lambda flag: [flag, 0]) == "SIGINT"
  assert preemption.agree(None, lambda flag: [flag, 0]) is None


def test_budget_counts_the_time_stopping_takes():
  now = [0.0]
  stops = preemption.StopRequests(100.0, clock=lambda: now[0], start=0.0)
  now[0] = 80.0
  assert not stops.expired(reserve_s=15.0)
  assert stops.expired(reserve_s=25.0) and stops.requested() == "train.max_runtime"
  assert not preemption.StopRequests(0.0, clock=lambda: 1e9).expired(1e9)  # no budget


def test_most_of_an_epoch_skipped_is_divergence():
  watch = metrics_lib.NonfiniteWatch(25, 0.5)
  rows = [{"loss": 1.0, "nonfinite": 0.0}] + [{"loss": np.nan, "nonfinite": 1.0}] * 11
  rows[5] = {"loss": 1.0, "nonfinite": 0.0}  # never 25 in a row
  watch.update(rows, 1)
  with pytest.raises(errors.DivergedError, match="10 of the 12 steps of epoch 1"):
    watch.check_epoch(rows, 1, 1)
  watch.check_epoch(rows[:2] * 3, 1, 1)  # half skipped: goes on
  metrics_lib.NonfiniteWatch(25, 1.0).check_epoch(rows, 1, 1)  # 1.0: never


# ---------------------------------------------------------------------------------------------
# Signals: the same command resumes with no step lost
# ---------------------------------------------------------------------------------------------

# (name, JAXVAE_FAULT, expected exit status): steps 1-2 are epoch 1, 3-4 epoch 2.
SIGNALLED = [
  ("sigterm_before_training", "run_file:1:SIGTERM", 75),
  ("sigterm_mid_epoch", "train.step:3:SIGTERM", 75),
  ("sigint_at_epoch_end", "train.step:2:SIGINT", 75),
  ("second_sigterm_during_the_save", "train.step:3:SIGTERM,stop.saving:1:SIGTERM", -15),
]


@pytest.fixture(scope="module")
def signalled_runs(tmp_path_factory, short_overrides, short_run):
  """The runs of SIGNALLED, each sent its signals at known steps: {name: (workdir, status,
  stderr)}. They run at once, after `short_run` filled the compile cache."""
  root = tmp_path_factory.mktemp("signalled")
  overrides = dict(short_overrides, **EPOCH_SAVES)
  procs = {}
  for name, fault, _ in SIGNALLED:
    workdir = root / name
    env = dict(os.environ, JAXVAE_FAULT=fault)
    procs[name] = (
      workdir,
      subprocess.Popen(
        _train_args(workdir, overrides),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
      ),
    )
  out = {}
  for name, (workdir, proc) in procs.items():
    _, err = proc.communicate(timeout=600)
    out[name] = (workdir, proc.returncode, err)
  return out


@pytest.mark.parametrize("name, fault, status", SIGNALLED)
def test_signal_saves_the_step_and_the_rerun_loses_none(
  signalled_runs, short_run, short_overrides, name, fault, status
):
  workdir, returncode, err = signalled_runs[name]
  assert returncode == status, err[-3000:]
  assert "Traceback" not in err
  if name == "sigterm_before_training":  # nothing to save yet: it stops at once
    assert "stopped by SIGTERM before training started (nothing to save)" in err
    assert not os.path.isdir(workdir / "checkpoints") or _saved(workdir) == []
  elif name == "sigterm_mid_epoch":  # the stop saved step 3 itself (epochs save 2 and 4)
    assert "stopped by SIGTERM at step 3; re-run the same command to resume" in err
    assert _saved(workdir) == [2, 3]
  elif name == "sigint_at_epoch_end":  # the epoch ends (validation, record, save) first
    assert "stopped by SIGINT at step 2; re-run the same command to resume" in err
    assert _saved(workdir) == [2]
    assert _metrics(workdir) == ([1], [1, 2])
  else:  # killed by the second signal with the save of step 3 in flight: step 2 stays
    assert "Received SIGTERM again" in err
    assert 2 in _saved(workdir)
  assert _cli(workdir, dict(short_overrides, **EPOCH_SAVES)) == 0  # the same command again
  _same_end_as(workdir, short_run)


def test_max_runtime_stops_each_slot_with_its_state_and_the_slots_add_up(
  tmp_path, short_overrides, short_run, caplog
):
  """A budget too short for more than one step: each run does one step (an epoch's end
  included), saves and exits 75; four slots make the whole run, bitwise."""
  overrides = dict(short_overrides, **EPOCH_SAVES, **{"train.max_runtime": "0.001"})
  statuses = []
  while len(statuses) < 6:
    statuses.append(_cli(tmp_path, overrides))
    if statuses[-1] != main_lib.EXIT_STOPPED:
      break
  assert statuses == [75, 75, 75, 0]
  assert "stopped by train.max_runtime at step 3" in caplog.text
  _same_end_as(tmp_path, short_run)


# ---------------------------------------------------------------------------------------------
# A full disk: one line naming the path, then the same command resumes
# ---------------------------------------------------------------------------------------------

# Every write of run state in training, failing with ENOSPC (see test_faults.TRAINING_KILLS for
# where each pass lands).
FULL_DISK = [
  ("run_file", 1, "jaxvae_run.json"),
  ("metrics.line", 3, "metrics.jsonl"),
  ("checkpoint.issued", 2, os.path.join("checkpoints", "2")),
  ("checkpoint.best", 1, os.path.join("best", "2")),
  ("report.written", 2, "reconstructions.png"),
  ("finish", 1, "training_curves.png"),
  ("run_file", 2, "jaxvae_run.json"),
]


@pytest.mark.parametrize("point, n, path", FULL_DISK)
def test_full_disk_at_each_write_is_one_line_and_the_rerun_resumes(
  tmp_path, short_overrides, short_run, capsys, point, n, path
):
  overrides = dict(short_overrides, **(REPORTS if point == "report.written" else {}))
  faults.set_faults(f"{point}:{n}:ENOSPC")
  try:
    assert _cli(tmp_path, overrides) == 1
  finally:
    faults.set_faults(None)
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert "no space left on the device while" in lines[0]
  assert os.path.join(str(tmp_path), path) in lines[0]
  assert "run the same command again" in lines[0]
  assert _cli(tmp_path, overrides) == 0
  _same_end_as(tmp_path, short_run)


def test_full_disk_while_building_the_store_leaves_no_temporary_folder(
  tmp_path, tiny_overrides, capsys
):
  cache = tmp_path / "cache"
  overrides = dict(tiny_overrides, **{"data.cache_dir": str(cache)})
  faults.set_faults("store.chunk:1:ENOSPC")
  try:
    assert _cli(tmp_path / "run", overrides, mode="preprocess") == 1
  finally:
    faults.set_faults(None)
  err = capsys.readouterr().err
  assert "error: no space left on the device while running --mode=preprocess" in err
  assert "features.raw" in err and "Traceback" not in err
  features = cache / "features"
  assert not [n for n in os.listdir(features) if ".tmp." in n]  # its space is given back


def test_full_disk_while_exporting_is_one_line(tmp_path, short_run, short_overrides, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(short_run, workdir)
  faults.set_faults("export.file:1:ENOSPC")
  try:
    assert _cli(workdir, short_overrides, mode="export") == 1
  finally:
    faults.set_faults(None)
  err = capsys.readouterr().err
  assert "error: no space left on the device while running --mode=export" in err
  assert os.path.join(str(workdir), "export", "encoder.jax_export") in err


def _mount_tmpfs(path, size: str) -> bool:
  os.makedirs(path, exist_ok=True)
  if os.geteuid() != 0 or shutil.which("mount") is None:
    return False
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
  return done.returncode == 0


def test_a_real_small_disk_fills_then_the_run_resumes_once_space_is_back(
  tmp_path, short_overrides, short_run
):
  """A 1 MB file system (a tmpfs; needs root, skipped without): the run ends with one line,
  its last checkpoint restores, and once the disk is larger the same command finishes it."""
  disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
  if not _mount_tmpfs(disk, "1m"):
    pytest.skip("cannot mount a small tmpfs here (not root)")
  try:
    workdir = disk / "run"
    args = _train_args(workdir, short_overrides)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    errors_ = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors_) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "no space left on the device" in errors_[0] and str(workdir) in errors_[0]
    assert "may stop with a full disk" in done.stderr  # the estimate warned before training
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_end_as(workdir, short_run)
  finally:
    subprocess.run(["umount", "-l", str(disk)])


# ---------------------------------------------------------------------------------------------
# Divergence that leaves the parameters finite
# ---------------------------------------------------------------------------------------------

BLOWN_UP = {
  "train.lr": "1e6",
  "train.clip_norm": "0",
  "train.max_nonfinite_share": "1.0",  # let it run on: a finite but broken model is saved
  "train.max_nonfinite_steps": "0",
}


def test_an_update_that_breaks_the_model_stops_the_run_at_the_epoch_end(
  tmp_path, tiny_overrides, capsys
):
  # Two steps an epoch: the first update breaks the model, the second is skipped (never two in
  # a row); a share of 0.4 makes that one "most". The same compiled step as `broken_run`.
  # A checkpoint every step: step 1's holds the broken parameters and must go too.
  overrides = dict(tiny_overrides, **BLOWN_UP) | {
    "train.max_nonfinite_share": "0.4",
    "train.checkpoint_every_steps": "1",
  }
  assert _cli(tmp_path, overrides) == 1
  err = capsys.readouterr().err
  assert "error: training diverged: 1 of the 2 steps of epoch 1 (steps 1-2)" in err, err[-2000:]
  assert "the checkpoints saved during that epoch (steps 1) were removed; a re-run starts" in err
  assert _saved(tmp_path) == []


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory, tiny_overrides):
  """A run whose parameters are finite and whose outputs are not."""
  workdir = tmp_path_factory.mktemp("broken")
  overrides = dict(tiny_overrides, **BLOWN_UP, **REPORTS)
  assert _cli(workdir, overrides) == 0
  return workdir, overrides


def test_a_broken_model_is_never_best_and_its_reports_are_skipped(broken_run):
  workdir, _ = broken_run
  assert not [n for n in os.listdir(workdir / "best") if n.isdigit()]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["val/loss"] for r in rows if r.get("kind") == "epoch"] == [None, None]
  assert not os.path.exists(workdir / "reconstructions.png")  # no NaN reached the plots


@pytest.mark.parametrize("mode", ["eval", "generate", "export"])
def test_modes_meet_non_finite_outputs_with_one_line(broken_run, mode, capsys):
  workdir, overrides = broken_run
  assert _cli(workdir, overrides, mode=mode) == 1
  err = capsys.readouterr().err
  assert "Traceback" not in err
  assert [line for line in err.splitlines() if line.startswith("error:")] == [
    line for line in err.splitlines() if "gives non-finite" in line
  ]
  assert "gives non-finite" in err


def test_the_api_refuses_to_play_non_finite_spectrograms(broken_run):
  import jaxvae

  workdir, _ = broken_run
  model = jaxvae.load(str(workdir), which="latest")
  x = np.zeros((1, *model.spec.input_shape), np.float32)
  with pytest.raises(errors.NonFiniteOutputError, match="gives non-finite latents"):
    model.to_audio(model.reconstruct(x))  # the model's own NaN: not blamed on the caller
  with pytest.raises(errors.DataError, match="features hold NaN|NaN or infinite"):
    model.to_audio(np.full_like(x, np.nan))  # the caller's NaN
