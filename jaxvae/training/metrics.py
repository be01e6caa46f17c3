"""Step metrics on the host: means over a split (validation), over a window of train steps,
and the watch that stops a run whose steps keep being skipped as non-finite."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxvae import errors
from jaxvae.data import pipeline
from jaxvae.training.state import TrainState


def evaluate(
  job, state: TrainState, examples: pipeline.Examples, stage: int = -1
) -> dict[str, float]:
  """Example-weighted means of the objective's metrics over a whole split.

  Histogram outputs (`*_counts`) are summed over the split instead; for each the result has
  `<name>s_used` (non-zero bins, e.g. `codes_used`) and `<name>_perplexity` (exp of the usage
  entropy), and the raw histogram is returned under `histograms`. For a store of several
  `data.sources` each source's metrics are there too, as `<source>/<metric>`.
  """
  names = list(examples.store.sources)
  if len(names) < 2:
    return _summarize(_collect(job, state, examples, stage))
  # A `data.sources` run: each source's split on its own (its metrics under `<source>/`),
  # and the overall means from the same batches, weighted as one pass would weight them.
  out, everything = {}, []
  for name in names:
    part = examples.of_source(name)
    if part is None:
      continue
    collected = _collect(job, state, part, stage)
    everything += collected
    mine = _summarize(collected)
    mine.pop("histograms", None)
    out |= {f"{name}/{k}": v for k, v in mine.items()}
  return _summarize(everything) | out


def _collect(job, state, examples, stage) -> list[dict]:
  eval_step = job.eval_steps[stage]
  collected = [
    eval_step(state, job.put(b))
    for b in pipeline.eval_batches(examples, job.config.train.batch_size)
  ]
  return jax.device_get(collected)


def _summarize(collected: list[dict]) -> dict[str, Any]:
  weights = np.array([m["count"] for m in collected])
  out: dict[str, Any] = {}
  for key in collected[0]:
    if key not in ("count", "counts", "latent"):
      out[key] = float(np.sum([m[key] * w for m, w in zip(collected, weights)]) / weights.sum())
  histograms = {}
  for key in collected[0]["counts"]:
    total = np.sum([np.asarray(m["counts"][key], np.float64) for m in collected], axis=0)
    name = key[: -len("_counts")]
    p = total / max(total.sum(), 1e-12)
    out[f"{name}s_used"] = int(np.count_nonzero(total))
    out[f"{name}_perplexity"] = float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))
    histograms[key] = total
  if "latent" in collected[0]:
    usage = latent_usage(
      {k: np.sum([m["latent"][k] for m in collected], axis=0) for k in collected[0]["latent"]},
      float(weights.sum()),
    )
    kl = np.asarray(usage["kl_per_dim"])
    if np.all(np.isfinite(kl)):  # a diverged state has neither (its epoch is reported as such)
      out["active_units"] = usage["active_units"]
      histograms["kl_per_dim"] = kl
  if histograms:
    out["histograms"] = histograms
  return out


# Validation metrics where higher is better (train.best_direction='auto'); the rest are
# losses, errors, divergences and perplexities.
MAXIMIZED = ("accuracy", "acc", "nmi", "ari", "purity", "f1", "precision", "recall")
MAXIMIZED += ("active_units", "codes_used", "code_perplexity", "silhouette")


def best_direction(name: str, setting: str = "auto") -> str:
  """'min' or 'max' for the validation metric `name` under `train.best_direction`."""
  if setting != "auto":
    return setting
  leaf = name.split("/")[-1]
  return "max" if any(leaf == m or leaf.endswith("_" + m) for m in MAXIMIZED) else "min"


def improves(value: float, best: float, has_best: bool, direction: str) -> bool:
  """Whether `value` beats `best` (by more than 1e-12) in `direction`; any finite value
  beats no best at all."""
  if not np.isfinite(value):
    return False
  if not has_best:
    return True
  return value < best - 1e-12 if direction == "min" else value > best + 1e-12


@dataclasses.dataclass(frozen=True)
class BestMetric:
  """`train.best_metric` resolved once per run: its name (without 'val/') and 'min' / 'max'."""

  name: str
  direction: str

  @classmethod
  def of_config(cls, config) -> BestMetric:
    name = best_metric_name(config)
    return cls(name, best_direction(name, config.train.best_direction))

  @property
  def per_source(self) -> bool:
    """A `data.sources` metric (<source>/<metric>): known only at the first evaluation."""
    return "/" in self.name


def best_metric_name(config) -> str:
  """`train.best_metric` without a 'val/' prefix."""
  name = str(config.train.best_metric)
  return name[len("val/") :] if name.startswith("val/") else name


def split_metric_names(step_out) -> list[str]:
  """The names `evaluate` reports for an eval step's output (its traced shape is enough):
  the objective's metrics plus the usage figures derived from histograms and latents."""
  names = [k for k in step_out if k not in ("count", "counts", "latent")]
  for key in step_out.get("counts", {}):
    name = key[: -len("_counts")]
    names += [f"{name}s_used", f"{name}_perplexity"]
  if "latent" in step_out:
    names.append("active_units")
  return names


def check_best_metric(config, names) -> None:
  """A ConfigError unless `train.best_metric` is one of the validation metrics `names`."""
  name = best_metric_name(config)
  if name not in names:
    raise errors.ConfigError(
      f"config key 'train.best_metric' is {config.train.best_metric!r}, which model "
      f"'{config.model.name}' does not report; its validation metrics are "
      f"{', '.join(sorted(names))}"
    )


ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active when Var_x(E_q[z_d]) > 0.01


def latent_usage(sums: dict, n: float) -> dict[str, Any]:
  """Active units and the per-dimension KL from `step.latent_sums` summed over `n` examples:
  {'active_units', 'latent_dim', 'kl_per_dim', 'mu_variance'}."""
  n = max(n, 1.0)
  mean = np.asarray(sums["mu"], np.float64) / n
  var = np.maximum(np.asarray(sums["mu2"], np.float64) / n - mean**2, 0.0)
  return {
    "active_units": int(np.sum(var > ACTIVE_THRESHOLD)),
    "latent_dim": int(len(var)),
    "kl_per_dim": (np.asarray(sums["kl"], np.float64) / n).tolist(),
    "mu_variance": var.tolist(),
  }


def mean_metrics(rows: list[dict]) -> dict[str, float]:
  """Means of host rows over the steps whose update was applied, and `nonfinite_steps`, how
  many were skipped. A metric with no finite value in the window is left out, not NaN."""
  if not rows:
    return {}
  out = {}
  for k in rows[0]:
    values = [r[k] for r in rows if not r.get("nonfinite") and np.isfinite(r[k])]
    if k != "nonfinite" and values:
      out[k] = float(np.mean(values))
  out["nonfinite_steps"] = float(sum(r.get("nonfinite", 0.0) for r in rows))
  return out


class NonfiniteWatch:
  """Counts skipped (non-finite) steps in a row from host copies of the step metrics, read
  only at log steps, checkpoints and epoch ends; raises DivergedError at the limit."""

  def __init__(self, limit: int, share: float = 0.5):
    self.limit = limit
    self.share = share  # train.max_nonfinite_share: more of an epoch's steps stop the run
    self.run = 0  # skipped steps in a row, up to the last row seen
    self.first_step = -1
    self.bad_metrics: list[str] = []

  def update(self, rows: list[dict], first_step: int) -> None:
    """`rows` are host metrics of consecutive steps, the first at (1-based) `first_step`."""
    for i, row in enumerate(rows):
      if not row.get("nonfinite"):
        self.run = 0
        continue
      if self.run == 0:
        self.first_step = first_step + i
        self.bad_metrics = sorted(
          k for k, v in row.items() if k != "nonfinite" and not np.isfinite(v)
        )
      self.run += 1
    if self.limit and self.run >= self.limit:
      what = ", ".join(self.bad_metrics) or "the updated parameters"
      raise errors.DivergedError(
        f"training diverged: {self.run} steps in a row from step {self.first_step} had a "
        f"non-finite {what} (their updates were skipped; train.max_nonfinite_steps is "
        f"{self.limit}). The last checkpoint before them is the resume point. Try a lower "
        "train.lr, a smaller train.clip_norm, or dtype float32 (or bfloat16 instead of "
        "float16)"
      )

  def check_epoch(self, rows: list[dict], epoch: int, first_step: int) -> None:
    """Raises DivergedError when more than `share` of an epoch's steps were skipped: an update
    that left the parameters finite but broken makes most later steps non-finite without 25
    in a row (a step that happens to stay finite resets the count)."""
    skipped = int(sum(bool(r.get("nonfinite")) for r in rows))
    if not rows or self.share >= 1.0 or skipped <= self.share * len(rows):
      return
    raise errors.DivergedError(
      f"training diverged: {skipped} of the {len(rows)} steps of epoch {epoch} (steps "
      f"{first_step}-{first_step + len(rows) - 1}) had a non-finite loss or gradient and were "
      f"skipped (train.max_nonfinite_share is {self.share:g}): an update left the parameters "
      "finite but broken. Try a lower train.lr, a train.clip_norm (e.g. 1.0), or dtype float32"
    )
