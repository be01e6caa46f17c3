"""Experiment trackers beside TensorBoard: where `training.writer.Writer` also sends what it logs.

`train.writers` names them, comma-separated: 'tensorboard' (always on: the workdir's `tb/`) and
'mlflow' (MLflow's local store under `DIR/mlruns`, or `train.mlflow_uri`; needs
`pip install 'jaxvae[mlflow]'`). A tracker has `scalars`, `image`, `audio`, `hparams` and
`close`; values arrive on the host and finite (histograms stay in TensorBoard and
metrics.jsonl).

A resumed run continues its tracker run: the MLflow run is found by the workdir's tag, and steps
an earlier attempt already logged (the ones a resume redoes, bitwise the same) are not logged
again, so the metric history has each step once.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time

import numpy as np

from jaxvae import errors
from jaxvae.config import base as config_base

_STEP_KEY = "jaxvae/step"  # logged with every scalar row: the last step the tracker has


def open_trackers(workdir: str, config, resuming: bool = False) -> list:
  """The trackers `train.writers` asks for besides TensorBoard (the writer's own).
  `resuming`: a training run that redoes steps after its checkpoint (they are not logged
  twice)."""
  if "mlflow" in config_base.writer_names(config):
    return [MlflowTracker(workdir, config, resuming)]
  return []


class MlflowTracker:
  """One MLflow run per workdir (tag `jaxvae.workdir`), in experiment `train.mlflow_experiment`
  (default: the model's name)."""

  def __init__(self, workdir: str, config, resuming: bool = False):
    try:
      from mlflow.entities import Metric
      from mlflow.entities import Param
      from mlflow.tracking import MlflowClient
    except ImportError:
      raise errors.ConfigError(
        "config key 'train.writers' names 'mlflow', which needs MLflow: "
        "pip install 'jaxvae[mlflow]' (or mlflow-skinny)"
      ) from None
    uri = str(config.train.mlflow_uri) or "file:" + os.path.join(os.path.abspath(workdir), "mlruns")
    if uri.startswith("file:"):
      # MLflow 3 keeps its file store in maintenance and refuses it unless asked: a local
      # folder needs no server or database, which is what a workdir's tracker wants.
      os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    self._metric, self._param = Metric, Param
    self.client = MlflowClient(tracking_uri=uri)
    name = str(config.train.mlflow_experiment) or config.model.name
    experiment = self.client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
    tag = os.path.abspath(workdir)
    found = self.client.search_runs([exp_id], f"tags.`jaxvae.workdir` = '{tag}'", max_results=1)
    if found:
      self.run_id = found[0].info.run_id
      self.client.update_run(self.run_id, status="RUNNING")
      history = self.client.get_metric_history(self.run_id, _STEP_KEY) if resuming else []
      self.logged = max((int(m.value) for m in history), default=0)
      logging.info("MLflow: continuing run %s (logged up to step %d)", self.run_id, self.logged)
    else:
      run = self.client.create_run(exp_id, tags={"jaxvae.workdir": tag}, run_name=config.model.name)
      self.run_id, self.logged = run.info.run_id, 0
      logging.info("MLflow: run %s in experiment %r (%s)", self.run_id, name, uri)

  def _new(self, step: int) -> bool:
    """Whether `step` is after what an earlier attempt logged (a redone step is skipped)."""
    return step > self.logged

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if not self._new(step):
      return
    now = int(time.time() * 1000)
    metrics = [self._metric(k, float(v), now, step) for k, v in values.items()]
    metrics.append(self._metric(_STEP_KEY, float(step), now, step))
    self.client.log_batch(self.run_id, metrics=metrics)

  def _artifact(self, folder: str, name: str, write) -> None:
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, name)
      write(path)
      self.client.log_artifact(self.run_id, path, folder)

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    if not self._new(step):
      return
    from matplotlib import image as mpl_image

    name = f"{tag.replace('/', '_')}_step{step:07d}.png"
    self._artifact("images", name, lambda p: mpl_image.imsave(p, np.asarray(image)))

  def audio(self, tag: str, y: np.ndarray, step: int, sr: int) -> None:
    if not self._new(step):
      return
    import soundfile as sf

    name = f"{tag.replace('/', '_')}_step{step:07d}.wav"
    clipped = np.clip(np.asarray(y, np.float32), -1.0, 1.0)
    self._artifact("audio", name, lambda p: sf.write(p, clipped, int(sr), subtype="PCM_16"))

  def hparams(self, flat_config: dict, final: dict) -> None:
    params = {k: str(v)[:500] for k, v in flat_config.items()}
    existing = self.client.get_run(self.run_id).data.params
    new = {k: v for k, v in params.items() if k not in existing}
    items = list(new.items())
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
      batch = [self._param(k, v) for k, v in items[i : i + 100]]
      self.client.log_batch(self.run_id, params=batch)
    buf = io.StringIO()
    for k, v in final.items():
      buf.write(f"{k}\t{v}\n")
    if final:
      self.client.log_text(self.run_id, buf.getvalue(), "final_metrics.tsv")

  def close(self, finished: bool = False) -> None:
    self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")
