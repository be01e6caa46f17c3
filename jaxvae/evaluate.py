"""`--mode=eval`: validation metrics of the best checkpoint, and how well the latent space
clusters by each label (k-means / GMM; silhouette, ARI, NMI, purity, Hungarian accuracy),
next to a PCA + k-means baseline on the raw features, with t-SNE plots and a projector dump.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np

from jaxvae import analysis
from jaxvae import checkpoint as ckpt_lib
from jaxvae import train
from jaxvae.data import pipeline


def encode_all(run, state, examples) -> dict[str, np.ndarray]:
  """Latent means (or latents), inputs and reconstructions of every real example, in order."""
  keep = {"mu", "z", "recon", "assignments"}
  chunks: dict[str, list] = {}
  for batch in pipeline.eval_batches(examples, run.config.train.batch_size):
    outputs = jax.device_get({k: v for k, v in run.forward(state, run.put(batch)).items()
                              if k in keep})
    real = batch["mask"] > 0
    for k, v in outputs.items():
      chunks.setdefault(k, []).append(np.asarray(v)[real])
    chunks.setdefault("x", []).append(batch["x"][real])
  return {k: np.concatenate(v) for k, v in chunks.items()}


def restore(run, workdir):
  """The best checkpoint of `workdir` (else its latest) into `run`'s state structure."""
  ckpts = ckpt_lib.Checkpoints(workdir)
  try:
    state, meta = ckpts.restore_best(run.state)
    if state is None and ckpts.latest_step() is not None:
      state, meta = ckpts.restore_latest(run.state, None)
  finally:
    ckpts.close()
  if state is None:
    raise FileNotFoundError(f"no checkpoint in workdir '{workdir}'; train first")
  return state, meta


def run_eval(config, workdir: str) -> int:
  run = train.setup(config)
  state, meta = restore(run, workdir)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  results = {"step": int(state.step), "val": train.evaluate(run, state, run.val_examples)}
  # Every original clip (augmented copies would count clips twice in the clustering).
  everything = pipeline.Examples(run.store, run.store.indices(augmented=False),
                                 config.data.normalize, run.train_examples.lyrics)
  encoded = encode_all(run, state, everything)
  labels = {name: run.store.label_array(name)[everything.indices]
            for name in run.store.label_values}
  names = run.store.label_values
  latent = encoded.get("mu", encoded.get("z"))
  if latent is not None and labels:
    results |= analysis.evaluate_latents(latent, labels, names, seed=config.seed,
                                         assignments=encoded.get("assignments"))
    results["baseline_pca_kmeans"] = analysis.pca_kmeans_baseline(
        encoded["x"], labels, names, seed=config.seed)
    for method in [m.strip() for m in config.eval.plots.split(",") if m.strip()]:
      try:
        analysis.plot_embedding_2d(latent, labels, names,
                                   os.path.join(out_dir, f"latent_{method}.png"),
                                   method=method, seed=config.seed,
                                   title=f"{config.model.name} latent ({method})")
      except ImportError as e:
        logging.warning("Skipping the %s plot: %s", method, e)
    analysis.write_projector(latent, labels, names, os.path.join(out_dir, "projector"))
  analysis.plot_spectrogram_grid(encoded["x"][:8], encoded["recon"][:8],
                                 os.path.join(out_dir, "reconstructions.png"))
  with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(json.dumps({"val": results["val"]}, indent=2))
  for name in labels:
    if name in results:
      r = results[name]
      print(f"{name}: nmi {r['nmi']:.3f}  ari {r['ari']:.3f}  acc {r['acc']:.3f}  "
            f"purity {r['purity']:.3f}")
  return 0
