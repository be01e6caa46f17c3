"""`train.writers=tensorboard,mlflow,wandb`: a run's scalars, report audio and config reach a
real MLflow store (the local one under DIR/mlruns) and W&B's offline files (DIR/wandb), and a
run killed and resumed continues the same MLflow run and W&B run id with each step logged
once."""

import glob
import json
import os
import subprocess

import mlflow
from test_faults import _train_args
from test_train import _cli

from conftest import ROOT
from jaxvae.training import trackers

OVERRIDES = {
  "train.writers": "tensorboard,mlflow,wandb",
  "train.image_every_epochs": "1",
  "train.report_samples": "False",
  "train.report_audio": "True",
}


def test_trackers_get_the_runs_logs_and_a_resume_continues_their_runs(tmp_path, short_overrides):
  overrides = dict(short_overrides, **OVERRIDES)
  # SIGKILL with step 3's checkpoint in flight: step 3 is logged, the resume redoes it from 2.
  env = dict(os.environ, JAXVAE_FAULT="checkpoint.issued:3")
  env.pop("WANDB_MODE", None)  # offline, the default
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
  _check_wandb_after_kill(tmp_path)


def _wandb_run(workdir) -> tuple[list[dict], dict]:
  """Per attempt (offline folder) of the workdir's one W&B run: {'steps': {key: [steps]},
  'exit': [exit codes]}; and the config it got."""
  with open(workdir / "wandb" / "jaxvae.json", encoding="utf-8") as f:
    run_id = json.load(f)["id"]
  folders = sorted(glob.glob(str(workdir / "wandb" / "offline-run-*")))
  assert all(s.endswith("-" + run_id) for s in folders)  # one run id, an offline folder each
  attempts, config = [], {}
  for folder in folders:
    steps, exits = {}, []
    for record in trackers.wandb_records(glob.glob(os.path.join(folder, "run-*.wandb"))[0]):
      kind = record.WhichOneof("record_type")
      if kind == "history":
        for item in record.history.item:
          steps.setdefault(item.key or "/".join(item.nested_key), []).append(
            record.history.step.num
          )
      elif kind == "exit":
        exits.append(record.exit.exit_code)
      elif kind == "config":
        config |= {i.key: json.loads(i.value_json) for i in record.config.update}
    attempts.append({"steps": steps, "exit": exits, "folder": folder})
  return attempts, config


def _check_wandb_after_kill(workdir) -> None:
  """W&B writes an offline file when its run ends: the SIGKILLed attempt left no steps, so
  the resume logged those after its checkpoint (step 2) again."""
  (killed, resumed), _ = _wandb_run(workdir)
  assert killed["steps"] == {} and killed["exit"] == []
  assert resumed["steps"]["train/loss"] == [3, 4]
  assert resumed["exit"] == [0]


def test_wandb_keeps_a_stopped_attempts_steps_and_the_resume_logs_the_rest(
  tmp_path, short_overrides
):
  overrides = dict(short_overrides, **dict(OVERRIDES, **{"train.writers": "tensorboard,wandb"}))
  env = dict(os.environ, JAXVAE_FAULT="train.step:3:SIGTERM")
  env.pop("WANDB_MODE", None)
  stopped = subprocess.run(
    _train_args(tmp_path, overrides), cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert stopped.returncode == 75, stopped.stderr[-2000:]
  assert _cli(tmp_path, overrides) == 0  # resumes after step 3
  (first, second), config = _wandb_run(tmp_path)
  assert first["steps"]["train/loss"] == [1, 2, 3] and first["exit"] == [1]
  assert second["steps"]["train/loss"] == [4] and second["exit"] == [0]
  assert first["steps"]["epoch/val/loss"] + second["steps"]["epoch/val/loss"] == [2, 4]
  report = "report/reconstruction/_type"  # the listening report's audio, every epoch
  assert first["steps"][report] + second["steps"][report] == [2, 4]
  assert glob.glob(os.path.join(second["folder"], "files", "media", "audio", "report", "*.wav"))
  assert config["model.name"] == "conv_vae" and "train.lr" in config
  assert trackers.wandb_history(
    str(tmp_path / "wandb"), json.loads((tmp_path / "wandb" / "jaxvae.json").read_text())["id"]
  ) == [1, 2, 3, 4]


def test_an_unknown_writer_names_the_key(tmp_path, tiny_overrides, capsys):
  assert _cli(tmp_path, dict(tiny_overrides, **{"train.writers": "tensorboard,comet"})) == 1
  assert "config key 'train.writers' names 'comet'" in capsys.readouterr().err
