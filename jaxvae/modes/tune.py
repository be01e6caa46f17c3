"""`--mode=tune`: an Optuna study over the search space a config declares in `tune.space`.

Each trial is a short training run (`tune.epochs` epochs) in `DIR/tune/trial_<n>`, reporting
its validation loss every epoch to a median pruner. The study lives in SQLite
(`DIR/tune/study.db`), so re-running the same command resumes it: finished trials are kept and
a trial cut off mid-run is tried again with the same parameters. Results go to
`DIR/tune/results.csv`, and the best trial becomes a runnable config, `DIR/tune/best_config.py`.

`tune.space` is a string of `key=kind(args)` items separated by `;`, for example
    "train.lr=loguniform(1e-5, 1e-2); model.latent_dim=int(8, 64); kl.beta_end=uniform(0.1, 4);
     model.channels=choice((8, 16, 32), (16, 32, 64))"
"""

from __future__ import annotations

import ast
import csv
import logging
import math
import os
import re

from jaxvae import errors
from jaxvae import faults
from jaxvae import workdir as workdir_lib
from jaxvae.errors import ConfigError
from jaxvae.evaluators import report as report_lib
from jaxvae.training import loop
from jaxvae.training import metrics as metrics_lib
from jaxvae.training import preemption
from jaxvae.variants import registry

KINDS = ("uniform", "loguniform", "int", "choice")
_ITEM = re.compile(r"^\s*([\w.]+)\s*=\s*(\w+)\s*\((.*)\)\s*$", re.S)


def parse_space(text: str, config) -> dict[str, tuple[str, list]]:
  """'key=kind(args); ...' -> {key: (kind, args)}, every key checked against the config."""
  space = {}
  for item in filter(str.strip, text.split(";")):
    m = _ITEM.match(item)
    if not m:
      raise ConfigError(
        f"config key 'tune.space': cannot read {item.strip()!r}; expected "
        "key=kind(args) with kind one of " + ", ".join(KINDS)
      )
    key, kind, args = m.groups()
    if kind not in KINDS:
      raise ConfigError(
        f"config key 'tune.space': {key} uses {kind!r}; expected one of " + ", ".join(KINDS)
      )
    try:
      parent, _, leaf = key.rpartition(".")
      node = config
      for part in parent.split(".") if parent else []:
        node = node[part]
      node[leaf]  # noqa: B018 - existence check
    except (KeyError, AttributeError):
      raise ConfigError(f"config key 'tune.space' names unknown config key '{key}'") from None
    values = ast.literal_eval(f"[{args}]")
    if kind != "choice" and len(values) != 2:
      raise ConfigError(f"config key 'tune.space': {key}={kind}(...) needs (low, high)")
    space[key] = (kind, values)
  if not space:
    raise ConfigError(
      "config key 'tune.space' is empty; declare what to search, e.g. "
      '"train.lr=loguniform(1e-5, 1e-2); model.latent_dim=int(8, 64)"'
    )
  return space


def suggest(trial, space) -> dict:
  params = {}
  for key, (kind, args) in space.items():
    if kind == "uniform":
      params[key] = trial.suggest_float(key, *args)
    elif kind == "loguniform":
      params[key] = trial.suggest_float(key, *args, log=True)
    elif kind == "int":
      params[key] = trial.suggest_int(key, *args)
    else:  # Optuna stores choices as strings; they are parsed back like overrides
      params[key] = trial.suggest_categorical(key, [repr(v) for v in args])
  return params


def _as_override(value) -> str:
  return value if isinstance(value, str) else repr(value)


def trial_config(spec: str, base_overrides: dict, params: dict, epochs: int):
  overrides = dict(base_overrides)
  overrides |= {k: _as_override(v) for k, v in params.items()}
  overrides["train.epochs"] = str(epochs)
  return registry.load_config(spec, overrides), overrides


def _objective(spec, base_overrides, space, config, workdir, optuna):
  def objective(trial):
    params = suggest(trial, space)
    trial_cfg, _ = trial_config(spec, base_overrides, params, config.tune.epochs)

    # The study minimizes train.best_metric, negated where higher is better.
    best = metrics_lib.BestMetric.of_config(trial_cfg)
    name, sign = best.name, -1.0 if best.direction == "max" else 1.0

    def report(record):
      trial.report(sign * record[f"val/{name}"], record["epoch"])
      faults.point("tune.trial")
      if trial.should_prune():
        raise optuna.TrialPruned()

    try:
      meta = loop.train_and_evaluate(
        trial_cfg,
        os.path.join(workdir, f"trial_{trial.number}"),
        progress=False,
        epoch_hooks=report_lib.training_hooks,
        epoch_callback=report,
      )
    except preemption.Stopped:
      # A signal or train.max_runtime: the study stops (exit 75) and the same command runs
      # these parameters again first (as a new trial, from its first step).
      trial.study.enqueue_trial(trial.params)
      raise
    except errors.DivergedError as e:  # a normal outcome of a search, not the study's end
      logging.warning("Trial %d diverged: %s", trial.number, e)
      return float("nan")  # Optuna records a NaN value as a failed trial
    if not math.isfinite(meta.best_val):
      return float("nan")  # no finite evaluation: a failed trial, never the best
    return sign * meta.best_val

  return objective


def _objective_name(config) -> str:
  """What the study minimizes: val <train.best_metric>, negated where higher is better."""
  best = metrics_lib.BestMetric.of_config(config)
  name = best.name
  if best.direction == "max":
    return f"-(val {name})"
  return f"val {name}"


def _retry_interrupted(study, optuna) -> None:
  """Trials left RUNNING by a killed process are failed and queued again."""
  for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(t.params)
    logging.info("Trial %d was interrupted; queued again", t.number)


def write_results(study, out_dir: str, space) -> str:
  path = os.path.join(out_dir, "results.csv")
  with workdir_lib.atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["trial", "state", "value", "seconds", *space])
    for t in study.get_trials(deepcopy=False):
      seconds = (
        (t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_complete and t.datetime_start
        else ""
      )
      writer.writerow(
        [
          t.number,
          t.state.name,
          "" if t.value is None else t.value,
          seconds,
          *[t.params.get(k, "") for k in space],
        ]
      )
  return path


def write_best_config(study, out_dir: str, spec: str, base_overrides: dict) -> str:
  best = study.best_trial
  overrides = dict(base_overrides) | {k: _as_override(v) for k, v in best.params.items()}
  path = os.path.join(out_dir, "best_config.py")
  base_path, _, preset = spec.partition(":")
  with workdir_lib.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(f'''"""Best trial {best.number} of the tune study (validation loss {best.value:.6g}).

  python -m jaxvae.main --config={path} --workdir=runs/best
"""

from jaxvae.variants import registry

BASE = {os.path.abspath(base_path) + (":" + preset if preset else "")!r}
OVERRIDES = {overrides!r}


def get_config(arg=None):
  del arg
  return registry.load_config(BASE, OVERRIDES)
''')
  return path


def run(config, workdir: str, args) -> int:
  spec, overrides = args.config, args.overrides
  try:
    import optuna
  except ImportError:
    raise ConfigError("--mode=tune needs optuna: pip install optuna (or jaxvae[tune])") from None
  space = parse_space(config.tune.space, config)
  out_dir = os.path.join(os.path.abspath(workdir), "tune")
  os.makedirs(out_dir, exist_ok=True)
  base_overrides = {k: v for k, v in overrides.items() if k not in space}
  study = optuna.create_study(
    study_name=config.model.name,
    storage=f"sqlite:///{os.path.join(out_dir, 'study.db')}",
    load_if_exists=True,
    direction="minimize",
    sampler=optuna.samplers.TPESampler(seed=config.seed),
    pruner=optuna.pruners.MedianPruner(
      n_startup_trials=config.tune.pruner_startup_trials,
      n_warmup_steps=config.tune.pruner_warmup_epochs,
    ),
  )
  _retry_interrupted(study, optuna)
  done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
  remaining = config.tune.num_trials - len(study.get_trials(deepcopy=False, states=done))
  if remaining > 0:
    study.optimize(
      _objective(spec, base_overrides, space, config, out_dir, optuna), n_trials=remaining, catch=()
    )
  results = write_results(study, out_dir, space)
  best = write_best_config(study, out_dir, spec, base_overrides)
  print(
    f"best trial {study.best_trial.number}: {_objective_name(config)} {study.best_value:.6g} with "
    f"{study.best_trial.params}\nresults: {results}\nbest config: {best}"
  )
  return 0
