"""Experiment trackers beside TensorBoard: where `training.writer.Writer` also sends what it logs.

`train.writers` names them, comma-separated: 'tensorboard' (always on: the workdir's `tb/`),
'mlflow' (MLflow's local store under `DIR/mlruns`, or `train.mlflow_uri`; needs
`pip install 'jaxvae[mlflow]'`) and 'wandb' (Weights & Biases, offline under `DIR/wandb` unless
`WANDB_MODE` says otherwise; needs `pip install 'jaxvae[wandb]'`). A tracker has `scalars`,
`image`, `audio`, `hparams` and `close`; values arrive on the host and finite (histograms stay
in TensorBoard and metrics.jsonl).

A resumed run continues its tracker run: the MLflow run is found by the workdir's tag, the W&B
run id is kept in `DIR/wandb/jaxvae.json`, and steps an earlier attempt already logged (the ones
a resume redoes, bitwise the same) are not logged again, so the metric history has each step
once. W&B cannot resume an offline run: each attempt writes its own `offline-run-*` folder under
the same run id, holding the steps after the previous one's.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import struct
import sys
import tempfile
import time
import uuid

import numpy as np

from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.config import base as config_base

_STEP_KEY = "jaxvae/step"  # logged with every scalar row: the last step the tracker has


def open_trackers(workdir: str, config, resuming: bool = False) -> list:
  """The trackers `train.writers` asks for besides TensorBoard (the writer's own).
  `resuming`: a training run that redoes steps after its checkpoint (they are not logged
  twice)."""
  names = config_base.writer_names(config)
  out = []
  if "mlflow" in names:
    out.append(MlflowTracker(workdir, config, resuming))
  if "wandb" in names:
    out.append(WandbTracker(workdir, config, resuming))
  return out


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


class WandbTracker:
  """One W&B run per workdir: its id is made once and kept in `DIR/wandb/jaxvae.json`. The mode
  is `WANDB_MODE` (default 'offline': files under `DIR/wandb`, sent later with `wandb sync`;
  'online' needs a login). The config goes in at the start of every attempt; the end of the run
  (`writer.finish`) adds the final metrics to its summary.

  W&B writes an offline run's file when the run ends: an attempt that is killed (SIGKILL, power)
  leaves nothing of its steps; one stopped by a signal or an error ends its run and keeps them.
  A resume reads the earlier attempts' files and logs from the step after the last one there.
  """

  def __init__(self, workdir: str, config, resuming: bool = False):
    try:
      import wandb
    except ImportError:
      raise errors.ConfigError(
        "config key 'train.writers' names 'wandb', which needs Weights & Biases: "
        "pip install 'jaxvae[wandb]'"
      ) from None
    self._wandb = wandb
    folder = os.path.join(os.path.abspath(workdir), "wandb")
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, "jaxvae.json")
    if os.path.isfile(marker):
      with open(marker, encoding="utf-8") as f:
        self.run_id = json.load(f)["id"]
    else:
      self.run_id = uuid.uuid4().hex[:12]
      workdir_lib.write_json(marker, {"id": self.run_id})
    if wandb.run is not None and wandb.run.id == self.run_id:
      self.run, self.logged = wandb.run, 0  # the end of the run: the writer left it open
      self._current = int(getattr(wandb.run, "step", 0) or 0)
      return
    self.logged = max(wandb_history(folder, self.run_id), default=0) if resuming else 0
    self._current = self.logged
    self.run = wandb.init(
      project=str(config.train.wandb_project) or config.model.name,
      id=self.run_id,
      name=os.path.basename(os.path.abspath(workdir)),
      dir=os.path.dirname(folder),
      mode=os.environ.get("WANDB_MODE", "offline"),
      resume="allow",
      config=config_base.flat(config),
      settings=wandb.Settings(
        silent=True, console="off", save_code=False, disable_git=True, x_disable_stats=True
      ),
    )
    logging.info(
      "W&B: run %s (%s, under %s; logged up to step %d)",
      self.run_id,
      self.run.settings.mode,
      folder,
      self.logged,
    )

  def _new(self, step: int) -> bool:
    return step > self.logged

  def _log(self, step: int, values: dict) -> None:
    """W&B drops a row for a step below one already logged: a report drawn in the background
    (its images and audio of step S arrive after step S + k's scalars) goes in at the newest
    step, with its own step as `<tag>/step`."""
    if step < self._current:
      values = values | {f"{k}/step": step for k in values}
    self._current = max(self._current, step)
    self.run.log(values, step=self._current)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self._new(step):
      self._log(step, {k: float(v) for k, v in values.items()})

  def image(self, tag: str, image: np.ndarray, step: int) -> None:
    if self._new(step):
      self._log(step, {tag: self._wandb.Image(np.asarray(image))})

  def audio(self, tag: str, y: np.ndarray, step: int, sr: int) -> None:
    if self._new(step):
      clipped = np.clip(np.asarray(y, np.float32), -1.0, 1.0)
      self._log(step, {tag: self._wandb.Audio(clipped, sample_rate=int(sr))})

  def hparams(self, flat_config: dict, final: dict) -> None:
    self.run.config.update(flat_config, allow_val_change=True)
    self.run.summary.update(final)

  def close(self, finished: bool = False) -> None:
    """At the end of training without an error the run stays open for `writer.finish`'s
    summary (which closes it); an error or a stop ends it here, marked failed."""
    if finished:
      self.run.finish(exit_code=0)
    elif sys.exc_info()[1] is not None:
      self.run.finish(exit_code=1)


def wandb_records(path: str) -> list:
  """The records of one offline W&B run file (`run-<id>.wandb`: LevelDB's log format, 32 KiB
  blocks of chunks, each with a 7-byte header: checksum, length, type 1 full, 2 first,
  3 middle, 4 last) as `wandb_internal_pb2.Record`s."""
  from wandb.proto import wandb_internal_pb2

  with open(path, "rb") as f:
    data = f.read()
  if data[:4] != b":W&B":
    raise ValueError(f"{path} is not a W&B run file")
  pos, block, chunk, records = 7, 32768, b"", []
  while pos + 7 <= len(data):
    if block - pos % block < 7:  # a block's tail too short for a header is padding
      pos += block - pos % block
      continue
    _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
    if kind == 0 or pos + 7 + length > len(data):  # zeros or a torn end
      break
    chunk += data[pos + 7 : pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(chunk)
      records.append(record)
      chunk = b""
  return records


def wandb_history(folder: str, run_id: str) -> list[int]:
  """The steps of the history rows in the offline files of run `run_id` under `folder`
  (every attempt's), in the order written; a file W&B could not end is read up to its tear,
  an unreadable one counts as empty (its steps are logged again)."""
  steps = []
  for path in sorted(glob.glob(os.path.join(folder, f"offline-run-*-{run_id}", "run-*.wandb"))):
    try:
      records = wandb_records(path)
    except Exception as e:  # noqa: BLE001 - a damaged tracker file must not end the run
      logging.warning("W&B: cannot read %s (%s); its steps are logged again", path, e)
      continue
    steps += [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"]
  return steps
