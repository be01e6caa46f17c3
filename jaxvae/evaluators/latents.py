"""How well the latent space clusters by each label (k-means / GMM; silhouette, ARI, NMI,
purity, Hungarian accuracy) next to a PCA + k-means baseline on the raw features, with 2-D
maps and an embedding-projector dump: the audio models' part of `--mode=eval`."""

from __future__ import annotations

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
from jaxvae.evaluators.validation import Validation
from jaxvae.training import metrics
from jaxvae.training import step as step_lib
from jaxvae.variants import registry


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
  files and a reconstruction grid under `out_dir`."""

  def __init__(self, job, out_dir: str):
    self.job = job
    self.out_dir = out_dir

  def run(self, state) -> dict:
    job, config, out_dir = self.job, self.job.config, self.out_dir
    # Every original clip (augmented copies would count clips twice in the clustering).
    everything = pipeline.Examples(
      job.store,
      job.store.indices(augmented=False),
      config.data.normalize,
      job.train_examples.lyrics,
    )
    encoded = encode_all(job, state, everything)
    labels = {
      name: job.store.label_array(name)[everything.indices] for name in job.store.label_values
    }
    names = job.store.label_values
    skipped = clustering.identifier_columns(labels)
    for name, reason in skipped.items():
      logging.info("eval: label column %r not clustered: %s", name, reason)
    labels = {k: v for k, v in labels.items() if k not in skipped}
    latent = encoded.get("mu", encoded.get("z"))
    results = {"step": int(state.step), "val": Validation(job).run(state)}
    if skipped:
      results["skipped_labels"] = skipped
    if "mu" in encoded and "logvar" in encoded:
      mu, logvar = encoded["mu"], encoded["logvar"]
      sums = jax.device_get(step_lib.latent_sums(mu, logvar, np.ones(len(mu), np.float32)))
      results["latent_usage"] = metrics.latent_usage(sums, len(mu)) | {
        "threshold": metrics.ACTIVE_THRESHOLD,
        "examples": "every original clip",
      }
      results["likelihood"] = likelihood.Likelihood(job).run(state)
    # The validation and training clips are among `everything`: no second forward pass.
    rows = everything.indices
    val = {k: v[np.isin(rows, job.val_examples.indices)] for k, v in encoded.items()}
    train_rows = np.isin(rows, job.store.indices("train", augmented=False))
    if "features" in job.variant.outputs:
      results["reconstruction"] = reconstruction.evaluate(
        val["x"], val["recon"], job.store.manifest["stats"], config
      ) | {"split": "validation"}
      if job.variant.has_prior(config):
        results["sample_quality"] = sample_quality.SampleQuality(job).run(
          state, val["x"], val["recon"], train_means=encoded["mu"][train_rows]
        )
    if latent is not None and labels:
      usage = results.get("latent_usage")
      active = (
        None if usage is None else np.asarray(usage["mu_variance"]) > metrics.ACTIVE_THRESHOLD
      )
      # A clip's segments share a label: the linear probe keeps them in one fold.
      clips = [job.store.manifest["examples"][i]["clip_id"] for i in everything.indices]
      groups = np.unique(clips, return_inverse=True)[1]

      points, results["cluster_space"] = clustering.cluster_space(
        latent, config.eval.cluster_space, metrics.ACTIVE_THRESHOLD, active=active
      )
      results |= clustering.evaluate_latents(
        points,
        labels,
        names,
        seed=config.seed,
        assignments=encoded.get("assignments"),
        groups=groups,
      )
      parts = registry.get(config.model.name).latent_parts(config)
      if parts:
        results["latent_parts"] = clustering.evaluate_parts(
          latent,
          parts,
          labels,
          names,
          space=config.eval.cluster_space,
          threshold=metrics.ACTIVE_THRESHOLD,
          active=active,
          seed=config.seed,
          groups=groups,
        )
      results["baseline_pca_kmeans"] = clustering.pca_kmeans_baseline(
        encoded["x"], labels, names, seed=config.seed, groups=groups
      )
      for method in [m.strip() for m in config.eval.plots.split(",") if m.strip()]:
        try:
          plots.plot_embedding_2d(
            latent,
            labels,
            names,
            os.path.join(out_dir, f"latent_{method}.png"),
            method=method,
            seed=config.seed,
            title=f"{config.model.name} latent ({method})",
          )
        except ImportError as e:
          logging.warning("Skipping the %s plot: %s", method, e)
      plots.write_projector(latent, labels, names, os.path.join(out_dir, "projector"))
    if "lyrics" in job.variant.outputs and labels:
      val_rows = np.isin(rows, job.val_examples.indices)
      results["coherence"] = coherence.lyrics_coherence(
        job, state, everything, labels, train_rows, val_rows
      )
    plots.plot_spectrogram_grid(
      encoded["x"][:8], encoded["recon"][:8], os.path.join(out_dir, "reconstructions.png")
    )
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
