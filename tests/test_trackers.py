"""`train.writers=tensorboard,mlflow`: a run's scalars, report audio and config reach a real
MLflow store (the local one under DIR/mlruns), and a run killed and resumed continues the same
MLflow run with each step logged once."""

import os
import subprocess

import mlflow
from test_faults import _train_args
from test_train import _cli

from conftest import ROOT

OVERRIDES = {
  "train.writers": "tensorboard,mlflow",
  "train.image_every_epochs": "1",
  "train.report_samples": "False",
  "train.report_audio": "True",
}


def test_mlflow_gets_the_runs_logs_and_a_resume_continues_its_run(tmp_path, short_overrides):
  overrides = dict(short_overrides, **OVERRIDES)
  # SIGKILL with step 3's checkpoint in flight: step 3 is logged, the resume redoes it from 2.
  env = dict(os.environ, JAXVAE_FAULT="checkpoint.issued:3")
  killed = subprocess.run(
    _train_args(tmp_path, overrides), cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert _cli(tmp_path, overrides) == 0  # the same command resumes from step 2

  os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
  client = mlflow.tracking.MlflowClient(tracking_uri="file:" + str(tmp_path / "mlruns"))
  experiment = client.get_experiment_by_name("conv_vae")
  runs = client.search_runs([experiment.experiment_id])
  assert len(runs) == 1  # the resume continued the run the killed attempt began
  run = runs[0]
  assert run.info.status == "FINISHED"
  assert run.data.tags["jaxvae.workdir"] == str(tmp_path)
  steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
  assert sorted(steps) == [1, 2, 3, 4]  # step 3: logged before the kill, not again
  epochs = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/val/loss")]
  assert sorted(epochs) == [2, 4]
  assert run.data.params["train.lr"] and run.data.params["model.name"] == "conv_vae"
  audio = [a.path for a in client.list_artifacts(run.info.run_id, "audio")]
  assert "audio/report_reconstruction_step0000002.wav" in audio
  assert "audio/report_reconstruction_step0000004.wav" in audio
  images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
  assert any(p.startswith("images/report_reconstructions_step") for p in images)


def test_an_unknown_writer_names_the_key(tmp_path, tiny_overrides, capsys):
  assert _cli(tmp_path, dict(tiny_overrides, **{"train.writers": "tensorboard,wandb"})) == 1
  assert "config key 'train.writers' names 'wandb'" in capsys.readouterr().err
