"""--mode=tune: an Optuna study that resumes from its SQLite file and writes a runnable best
config."""

import csv
import os

import pytest
from test_faults import _killed
from test_faults import _train_args
from test_train import _cli

from conftest import ROOT
from conftest import load_config

optuna = pytest.importorskip("optuna")

SPACE = (
  "train.lr=loguniform(1e-4, 1e-2); model.latent_dim=int(4, 8); "
  "model.channels=choice((4, 8, 8), (4, 4, 4))"
)


def test_study_survives_a_kill_resumes_and_writes_best_config(tmp_path, tiny_overrides):
  overrides = dict(
    tiny_overrides,
    **{
      "tune.space": SPACE,
      "tune.num_trials": "1",
      "tune.epochs": "1",
      "train.max_steps": "1",
      "train.image_every_epochs": "0",  # reports are not what this test is about
    },
  )
  # SIGKILLed inside trial 0 (fault point tune.trial): the same command runs it again.
  args = _train_args(tmp_path, overrides) + ["--mode=tune"]
  _killed(args, "tune.trial", 1)
  assert _cli(tmp_path, overrides, mode="tune") == 0
  overrides["tune.num_trials"] = "2"  # the same command with a bigger budget: one more trial
  assert _cli(tmp_path, overrides, mode="tune") == 0
  rows = list(csv.DictReader(open(tmp_path / "tune" / "results.csv")))
  assert [r["trial"] for r in rows] == ["0", "1", "2"]
  assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
  assert rows[0]["train.lr"] == rows[1]["train.lr"]  # the killed trial's parameters, again
  best = min(rows[1:], key=lambda r: float(r["value"]))
  from jaxvae.variants import registry

  config = registry.load_config(str(tmp_path / "tune" / "best_config.py"))
  assert config.train.lr == pytest.approx(float(best["train.lr"]))
  assert config.model.latent_dim == int(best["model.latent_dim"])
  assert os.path.isdir(tmp_path / "tune" / "trial_2" / "checkpoints")


def test_bad_space_names_the_key(tiny_overrides):
  from jaxvae.errors import ConfigError
  from jaxvae.modes import tune

  config = load_config("conv_vae.py:small", tiny_overrides)
  with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
    tune.parse_space("train.lrr=uniform(0, 1)", config)
  with pytest.raises(ConfigError, match="expected one of uniform"):
    tune.parse_space("train.lr=gauss(0, 1)", config)


def test_a_diverged_trial_fails_and_the_study_goes_on(tmp_path, tiny_overrides, monkeypatch):
  from jaxvae import errors
  from jaxvae.modes import tune
  from jaxvae.training import loop
  from jaxvae.training.state import RunMeta

  config = load_config("conv_vae.py:small", dict(tiny_overrides, **{"tune.space": SPACE}))
  space = tune.parse_space(config.tune.space, config)
  calls = []

  def fake_training(trial_config, workdir, **kwargs):
    calls.append(workdir)
    if len(calls) == 1:
      raise errors.DivergedError("training diverged: 25 steps in a row from step 3 ...")
    return RunMeta(best_val=1.0)

  monkeypatch.setattr(loop, "train_and_evaluate", fake_training)
  study = optuna.create_study()
  objective = tune._objective(
    os.path.join(ROOT, "configs", "conv_vae.py:small"),
    tiny_overrides,
    space,
    config,
    str(tmp_path),
    optuna,
  )
  study.optimize(objective, n_trials=2, catch=())  # catch=(): as tune.run, any error ends it
  assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def test_a_signal_stops_the_study_and_the_rerun_tries_those_parameters_again(
  tmp_path, tiny_overrides
):
  from jaxvae import faults

  overrides = dict(
    tiny_overrides,
    **{
      "tune.space": SPACE,
      "tune.num_trials": "1",
      "tune.epochs": "1",
      "train.max_steps": "2",
      "train.image_every_epochs": "0",
    },
  )
  faults.set_faults("train.step:1:SIGTERM")  # SLURM's notice, mid-epoch of trial 0
  try:
    assert _cli(tmp_path, overrides, mode="tune") == 75
  finally:
    faults.set_faults(None)
  assert _cli(tmp_path, overrides, mode="tune") == 0
  rows = list(csv.DictReader(open(tmp_path / "tune" / "results.csv")))
  assert [r["state"] for r in rows] == ["FAIL", "COMPLETE"]
  assert rows[0]["train.lr"] == rows[1]["train.lr"]
