"""How well the latent space clusters by each label (k-means / GMM; silhouette, ARI, NMI,
purity, Hungarian accuracy) next to a PCA + k-means baseline on the raw features, with 2-D
maps and an embedding-projector dump: the audio models' part of `--mode=eval`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import numpy as np

from jaxvae.data import pipeline
from jaxvae.evaluators import clustering
from jaxvae.evaluators import coherence
from jaxvae.evaluators import likelihood
from jaxvae.evaluators import plots
from jaxvae.evaluators import reconstruction
from jaxvae.evaluators import sample_quality
from jaxvae.evaluators import vocoding
from jaxvae.evaluators.validation import Validation
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.training import metrics
from jaxvae.training import step as step_lib


def encode_all(job, state, examples) -> dict[str, np.ndarray]:
  """Latent means (or latents), inputs and reconstructions of every real example, in order."""
  keep = {"mu", "logvar", "z", "recon", "assignments"}
  chunks: dict[str, list] = {}
  for batch in pipeline.eval_batches(examples, job.config.train.batch_size):
    outputs = job.gather({k: v for k, v in job.forward(state, job.put(batch)).items() if k in keep})
    real = batch["mask"] > 0
    for k, v in outputs.items():
      chunks.setdefault(k, []).append(np.asarray(v)[real])
    chunks.setdefault("x", []).append(batch["x"][real])
  return {k: np.concatenate(v) for k, v in chunks.items()}


@dataclasses.dataclass
class Pass:
  """Every original clip encoded once (augmented copies would count clips twice), with what
  the evaluators share: the outputs, the usable label columns, the splits' rows."""

  examples: pipeline.Examples
  encoded: dict[str, np.ndarray]  # mu / logvar / z / recon / assignments / x, in clip order
  labels: dict[str, np.ndarray]  # the label columns that are clustered (no identifiers)
  skipped: dict[str, str]  # identifier columns left out, with the reason
  val: np.ndarray  # bool per row: a validation clip
  train: np.ndarray  # bool per row: a training clip
  groups: np.ndarray  # one id per clip (a clip's segments share it: the probe's folds)

  @classmethod
  def of(cls, job, state) -> Pass:
    store = job.store
    examples = pipeline.Examples(
      store, store.indices(augmented=False), job.config.data.normalize, job.train_examples.lyrics
    )
    labels = {name: store.label_array(name)[examples.indices] for name in store.label_values}
    skipped = clustering.identifier_columns(labels)
    for name, reason in skipped.items():
      logging.info("eval: label column %r not clustered: %s", name, reason)
    rows = examples.indices
    clips = [store.manifest["examples"][i]["clip_id"] for i in rows]
    return cls(
      examples=examples,
      encoded=encode_all(job, state, examples),
      labels={k: v for k, v in labels.items() if k not in skipped},
      skipped=skipped,
      val=np.isin(rows, job.val_examples.indices),
      train=np.isin(rows, store.indices("train", augmented=False)),
      groups=np.unique(clips, return_inverse=True)[1] if len(clips) else np.zeros(0, int),
    )

  @property
  def latent(self) -> np.ndarray | None:
    return self.encoded.get("mu", self.encoded.get("z"))


# Each evaluator: (job, state, the pass, the results so far, out_dir) -> results to add.


def _validation(job, state, passed, results, out_dir) -> dict:
  return {"val": Validation(job).run(state)}


def _latent_usage(job, state, passed, results, out_dir) -> dict:
  mu, logvar = passed.encoded["mu"], passed.encoded["logvar"]
  sums = jax.device_get(step_lib.latent_sums(mu, logvar, np.ones(len(mu), np.float32)))
  usage = metrics.latent_usage(sums, len(mu))
  return {
    "latent_usage": usage
    | {"threshold": metrics.ACTIVE_THRESHOLD, "examples": "every original clip"}
  }


def _likelihood(job, state, passed, results, out_dir) -> dict:
  return {"likelihood": likelihood.Likelihood(job).run(state)}


def _reconstruction(job, state, passed, results, out_dir) -> dict:
  x, recon = passed.encoded["x"][passed.val], passed.encoded["recon"][passed.val]
  scores = reconstruction.evaluate(x, recon, job.store.manifest["stats"], job.config)
  return {"reconstruction": scores | {"split": "validation"}}


def _audio_reconstruction(job, state, passed, results, out_dir) -> dict:
  """With `generate.vocoder`: the validation clips' reconstructions vocoded and compared with
  the original audio (`evaluators.vocoding.audio_reconstruction`)."""
  voc = vocoder_lib.for_config(job.config)
  if voc is None:
    return {}
  rows = passed.examples.indices[passed.val]
  recon = passed.encoded["recon"][passed.val]
  return {"audio_reconstruction": vocoding.audio_reconstruction(job, voc, rows, recon)}


def _sample_quality(job, state, passed, results, out_dir) -> dict:
  e = passed.encoded
  quality = sample_quality.SampleQuality(job).run(
    state, e["x"][passed.val], e["recon"][passed.val], train_means=e["mu"][passed.train]
  )
  return {"sample_quality": quality}


def _active(results) -> np.ndarray | None:
  usage = results.get("latent_usage")
  return None if usage is None else np.asarray(usage["mu_variance"]) > metrics.ACTIVE_THRESHOLD


def _clustering(job, state, passed, results, out_dir) -> dict:
  """Each label's clustering scores and linear probe on the latent (in `eval.cluster_space`,
  the active dimensions from `latent_usage` when it ran)."""
  config = job.config
  if passed.latent is None or not passed.labels:
    return {}
  points, space = clustering.cluster_space(
    passed.latent, config.eval.cluster_space, metrics.ACTIVE_THRESHOLD, active=_active(results)
  )
  scores = clustering.evaluate_latents(
    points,
    passed.labels,
    job.store.label_values,
    seed=config.seed,
    assignments=passed.encoded.get("assignments"),
    groups=passed.groups,
  )
  return {"cluster_space": space} | scores


def _latent_parts(job, state, passed, results, out_dir) -> dict:
  config = job.config
  parts = job.variant.latent_parts(config)
  if passed.latent is None or not passed.labels or not parts:
    return {}
  scores = clustering.evaluate_parts(
    passed.latent,
    parts,
    passed.labels,
    job.store.label_values,
    space=config.eval.cluster_space,
    threshold=metrics.ACTIVE_THRESHOLD,
    active=_active(results),
    seed=config.seed,
    groups=passed.groups,
  )
  return {"latent_parts": scores}


def _baseline(job, state, passed, results, out_dir) -> dict:
  if not passed.labels:
    return {}
  baseline = clustering.pca_kmeans_baseline(
    passed.encoded["x"],
    passed.labels,
    job.store.label_values,
    seed=job.config.seed,
    groups=passed.groups,
  )
  return {"baseline_pca_kmeans": baseline}


def _maps(job, state, passed, results, out_dir) -> dict:
  """The 2-D maps of the latent (`eval.plots`) and the embedding-projector files."""
  config, latent, names = job.config, passed.latent, job.store.label_values
  if latent is None or not passed.labels:
    return {}
  for method in [m.strip() for m in config.eval.plots.split(",") if m.strip()]:
    try:
      plots.plot_embedding_2d(
        latent,
        passed.labels,
        names,
        os.path.join(out_dir, f"latent_{method}.png"),
        method=method,
        seed=config.seed,
        title=f"{config.model.name} latent ({method})",
      )
    except ImportError as e:
      logging.warning("Skipping the %s plot: %s", method, e)
  plots.write_projector(latent, passed.labels, names, os.path.join(out_dir, "projector"))
  return {}


def _coherence(job, state, passed, results, out_dir) -> dict:
  if not passed.labels:
    return {}
  scores = coherence.lyrics_coherence(
    job, state, passed.examples, passed.labels, passed.train, passed.val
  )
  return {"coherence": scores}


def _reconstruction_grid(job, state, passed, results, out_dir) -> dict:
  e = passed.encoded
  plots.plot_spectrogram_grid(
    e["x"][:8], e["recon"][:8], os.path.join(out_dir, "reconstructions.png")
  )
  return {}


EVALUATORS = {
  "validation": _validation,
  "latent_usage": _latent_usage,
  "likelihood": _likelihood,
  "reconstruction": _reconstruction,
  "audio_reconstruction": _audio_reconstruction,
  "sample_quality": _sample_quality,
  "clustering": _clustering,
  "latent_parts": _latent_parts,
  "baseline": _baseline,
  "maps": _maps,
  "coherence": _coherence,
  "reconstruction_grid": _reconstruction_grid,
}


def default_names(variant, config) -> list[str]:
  """What an audio family's declaration asks for (`Variant.data_kind`, `latent`, `outputs`),
  in the order they run (clustering reads `latent_usage`'s active dimensions)."""
  gaussian = variant.has_prior(config)
  features = "features" in variant.outputs
  wanted = {
    "validation": True,
    "latent_usage": gaussian,
    "likelihood": gaussian,
    "reconstruction": features,
    "audio_reconstruction": features and bool(str(config.generate.get("vocoder", ""))),
    "sample_quality": features and gaussian,
    "clustering": True,
    "latent_parts": bool(variant.latent_parts(config)),
    "baseline": True,
    "maps": True,
    "coherence": "lyrics" in variant.outputs,
    "reconstruction_grid": features,
  }
  return [name for name in EVALUATORS if wanted[name]]


def names(job) -> list[str]:
  """`eval.evaluators` (comma-separated names of `EVALUATORS`, in that order), else the
  family's declaration (`default_names`)."""
  chosen = [n.strip() for n in str(job.config.eval.evaluators).split(",") if n.strip()]
  return chosen or default_names(job.variant, job.config)


class Latents:
  """`--mode=eval` of audio models. `run(state)` -> {"step", "val": validation metrics, <label>:
  clustering metrics of every original clip's latent by that label, "cluster_space" (what
  was clustered: `eval.cluster_space`), "latent_parts" (where the variant names parts of the
  latent: {part: {"dims": [start, stop], "cluster_space", <label>: metrics}}, each part
  clustered alone), "coherence" (a model that decodes lyrics: `coherence.lyrics_coherence`,
  the labels of lyrics decoded from the audio alone), "baseline_pca_kmeans", and for
  Gaussian latents
  "latent_usage" (active units; KL per dimension to N(0, 1), also for VaDE, whose prior is
  its mixture), "likelihood" (IWAE), "reconstruction" (LSD, spectral convergence) and
  "sample_quality" (Fréchet / MMD)}, and writes the 2-D maps (`eval.plots`), the projector
  files and a reconstruction grid under `out_dir`. Which of these run is a list
  (`names(job)`: `eval.evaluators`, else what the model family declares), each one
  function of `EVALUATORS`."""

  def __init__(self, job, out_dir: str):
    self.job = job
    self.out_dir = out_dir

  def run(self, state) -> dict:
    """One pass over every original clip (`Pass`), then each of `names(job)` in turn; an
    evaluator reads the pass and the results of those before it."""
    job = self.job
    passed = Pass.of(job, state)
    results = {"step": int(state.step)}
    if passed.skipped:
      results["skipped_labels"] = passed.skipped
    for name in names(job):
      results |= EVALUATORS[name](job, state, passed, results, self.out_dir)
    return results

  def scalars(self, results: dict) -> dict[str, float]:
    """What goes to TensorBoard under `eval/`: the likelihood estimate, active units, sample
    quality, reconstruction distances and cross-modal coherence."""
    out = {}
    lk = results.get("likelihood", {})
    if lk.get("available"):
      out |= {"eval/nll_nats": lk["nll_nats"], "eval/nll_bits_per_dim": lk["nll_bits_per_dim"]}
      out["eval/elbo_nats"] = lk["elbo_nats"]
    if "latent_usage" in results:
      out["eval/active_units"] = float(results["latent_usage"]["active_units"])
    sq = results.get("sample_quality", {})
    if sq.get("available"):
      for key in ("prior", "prior_gmm", "reconstructions"):
        out[f"eval/frechet_{key}"] = sq[key]["frechet"]
        out[f"eval/mmd2_{key}"] = sq[key]["mmd2"]
    rec = results.get("reconstruction", {})
    if rec.get("lsd_db") is not None:
      out["eval/lsd_db"] = rec["lsd_db"]
      out["eval/spectral_convergence"] = rec["spectral_convergence"]
    audio = results.get("audio_reconstruction", {})
    if audio.get("available"):
      for side in ("reconstruction", "reconstruction_griffin_lim", "own_features"):
        for k, v in audio.get(side, {}).items():
          out[f"eval/audio_{side}/{k}"] = v
    for label, r in results.get("coherence", {}).items():
      if isinstance(r, dict):  # the label read off lyrics decoded from the audio alone
        out[f"eval/coherence_{label}"] = r["audio_only"]
    return out

  def summary(self, results: dict) -> str:
    lines = [json.dumps({"val": results["val"]}, indent=2)]
    lk, usage = results.get("likelihood", {}), results.get("latent_usage")
    if lk.get("available"):
      lines.append(
        f"-log p(x) <= {lk['nll_nats']:.2f} nats ({lk['nll_bits_per_dim']:.4f} bits/dim; IWAE, "
        f"K={lk['iw_samples']}, {lk['likelihood']}); ELBO {lk['elbo_nats']:.2f}"
      )
    if usage:
      lines.append(f"active units {usage['active_units']} of {usage['latent_dim']}")
    sq = results.get("sample_quality", {})
    if sq.get("available"):
      for key in ("prior", "prior_gmm", "reconstructions"):
        lines.append(
          f"{key}: Fréchet {sq[key]['frechet']:.2f}  MMD^2 {sq[key]['mmd2']:.4f}  "
          f"(n={sq[key]['n']}, {sq['embedding']})"
        )
    rec = results.get("reconstruction", {})
    if rec.get("lsd_db") is not None:
      lines.append(
        f"reconstruction: LSD {rec['lsd_db']:.2f} dB, spectral convergence "
        f"{rec['spectral_convergence']:.3f} ({rec['units']})"
      )
    audio = results.get("audio_reconstruction", {})
    if audio.get("available"):
      r, own = audio["reconstruction"], audio["own_features"]
      gl = audio.get("reconstruction_griffin_lim", {})
      lines.append(
        f"in audio through the vocoder ({audio['clips']} clips): mel L1 {r['mel_l1_db']:.2f} dB, "
        f"spectral convergence {r['spectral_convergence']:.3f} (the same reconstructions "
        f"through Griffin-Lim: {gl.get('mel_l1_db', float('nan')):.2f} dB, "
        f"{gl.get('spectral_convergence', float('nan')):.3f}; the clips' own features "
        f"vocoded: {own['mel_l1_db']:.2f} dB, {own['spectral_convergence']:.3f})"
      )
    space = results.get("cluster_space")
    if space:
      lines.append(f"clustered: {space['space']} latent means, {space['dims']} dimensions")
    lines += label_lines(results)
    co = results.get("coherence", {})
    for name, r in co.items():
      if isinstance(r, dict):
        lines.append(
          f"{name} of decoded lyrics ({co['judge']}; {r['n']} validation clips, chance "
          f"{r['chance']:.3f}): from the audio alone {r['audio_only']:.3f}, from audio + "
          f"lyrics {r['joint']:.3f}, real lyrics {r['real']:.3f}"
        )
    for part, scores in results.get("latent_parts", {}).items():
      start, stop = scores["dims"]
      lines.append(f"the {part} part alone (dimensions {start}-{stop - 1}):")
      lines += ["  " + line for line in label_lines(scores)]
    return "\n".join(lines)


def label_lines(results: dict) -> list[str]:
  """One summary line per clustered label of `results`."""
  lines = []
  for name, r in results.items():
    if isinstance(r, dict) and "nmi" in r and name != "baseline_pca_kmeans":
      probe = r.get("linear_probe")
      lines.append(
        f"{name}: nmi {r['nmi']:.3f}  ari {r['ari']:.3f}  acc {r['acc']:.3f}  "
        f"purity {r['purity']:.3f}"
        + (f"  linear probe {probe['acc']:.3f} (chance {probe['chance']:.3f})" if probe else "")
      )
  return lines
