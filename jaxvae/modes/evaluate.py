"""`--mode=eval`: validation metrics of the best checkpoint, and how well the latent space
clusters by each label (k-means / GMM; silhouette, ARI, NMI, purity, Hungarian accuracy),
next to a PCA + k-means baseline on the raw features, with t-SNE plots and a projector dump.

Token models (`data.kind=midi`) get instead: validation token NLL and perplexity, and the
statistics of `eval.num_generated` generated pieces (`generate.num_tokens` each, from the prior
in VAE stages) against those of the validation windows (`jaxvae.music_stats`), in
`DIR/eval/metrics.json` as {"step", "val", "generated", "data", "distance", "generation"}, in
TensorBoard under `eval/`, and the generated pieces as `DIR/eval/samples/sample_XX.mid`.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from jaxvae.evaluators import clustering as analysis
from jaxvae.training import checkpoint as ckpt_lib
from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.symbolic import stats as music_stats
from jaxvae.training import loop as train
from jaxvae.data import pipeline


def encode_all(run, state, examples) -> dict[str, np.ndarray]:
  """Latent means (or latents), inputs and reconstructions of every real example, in order."""
  keep = {"mu", "z", "recon", "assignments"}
  chunks: dict[str, list] = {}
  for batch in pipeline.eval_batches(examples, run.config.train.batch_size):
    outputs = run.gather({k: v for k, v in run.forward(state, run.put(batch)).items()
                          if k in keep})
    real = batch["mask"] > 0
    for k, v in outputs.items():
      chunks.setdefault(k, []).append(np.asarray(v)[real])
    chunks.setdefault("x", []).append(batch["x"][real])
  return {k: np.concatenate(v) for k, v in chunks.items()}


def restore(run, workdir):
  """The best checkpoint of `workdir` (else its newest intact latest one) into `run`'s state
  structure; CheckpointError when none restores."""
  ckpts = ckpt_lib.Checkpoints(workdir)
  try:
    state, meta = ckpts.restore_best(run.state)
    if state is None:
      if ckpts.latest_step() is None:
        raise errors.CheckpointError(f"no checkpoint in workdir '{workdir}' can be restored; "
                                     "train first (or start over with --clear)")
      state, meta = ckpts.restore_latest(run.state, None)
  finally:
    ckpts.close()
  return state, meta


def _data_windows(run) -> np.ndarray:
  """The validation split's token windows, without augmented copies."""
  rows = run.store.manifest["examples"]
  keep = [i for i in run.val_examples.indices if not rows[i].get("augment")]
  return np.asarray(run.store.features[np.asarray(keep, np.int64)])


def _tb_scalars(music: dict) -> dict[str, float]:
  out = {f"eval/val_{k}": music["val"][k] for k in ("nll", "ppl", "accuracy")
         if k in music["val"]}
  for name in ("generated", "data"):
    out |= {f"eval/{name}_{k}": v for k, v in music[name].items()
            if k in music_stats.SCALARS and v is not None}
  out |= {f"eval/distance_{k}": v for k, v in music["distance"].items()
          if isinstance(v, float)}
  return out


def _fmt(v) -> str:
  return "n/a" if v is None else f"{v:.3f}"


def _print_music(results: dict) -> None:
  val, gen, data, dist = (results[k] for k in ("val", "generated", "data", "distance"))
  print(f"val: nll {val['nll']:.4f}  ppl {val['ppl']:.2f}  "
        f"accuracy {_fmt(val.get('accuracy'))}")
  print(f"generated ({gen['pieces']} pieces, {gen['empty']} empty) vs data "
        f"({data['pieces']} validation windows):")
  for k in music_stats.SCALARS:
    print(f"  {k:<14} {_fmt(gen[k]):>8} vs {_fmt(data[k]):>8}  "
          f"overlap {_fmt(dist['overlap_area'][k])}")
  print(f"  pitch classes: JS {_fmt(dist['pitch_class_js'])}  "
        f"L1 {_fmt(dist['pitch_class_l1'])}")


def run_eval_midi(run, state, workdir: str) -> int:
  """Token NLL / perplexity and generated-vs-data music statistics (see the module doc)."""
  from jaxvae.modes import generate
  from jaxvae.training import writer as monitor
  config = run.config
  n = config.eval.num_generated
  out_dir = os.path.join(workdir, "eval")
  val = train.evaluate(run, state, run.val_examples)
  val["ppl"] = float(np.exp(val["nll"]))  # of the mean NLL, not a mean of per-batch ppl
  generated = generate.sample_tokens(run, state, config, n, config.seed)
  files = generate.write_midi(generated, os.path.join(out_dir, "samples"))
  results = {"step": int(state.step), "val": val,
             **music_stats.compare(list(generated), list(_data_windows(run))),
             "generation": {"num_generated": n, "num_tokens": config.generate.num_tokens,
                            "latent": "prior" if run.model.cfg.is_vae else "none",
                            "temperature": config.generate.temperature,
                            "top_k": config.generate.top_k, "top_p": config.generate.top_p,
                            "seed": config.seed, "files": files},
             "note": "pitch-class histograms are duration-weighted; drum notes excluded"}
  workdir_lib.write_json(os.path.join(out_dir, "metrics.json"), results, indent=2)
  writer = monitor.Writer(workdir, config)
  try:
    writer.scalars(int(state.step), _tb_scalars(results))
  finally:
    writer.close()
  _print_music(results)
  print(f"wrote {os.path.join(out_dir, 'metrics.json')}")
  return 0


def run_eval(config, workdir: str) -> int:
  run = train.setup(config)
  state, meta = restore(run, workdir)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  if config.data.kind == "midi":
    return run_eval_midi(run, state, workdir)
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
  workdir_lib.write_json(os.path.join(out_dir, "metrics.json"), results, indent=2)
  print(json.dumps({"val": results["val"]}, indent=2))
  for name in labels:
    if name in results:
      r = results[name]
      print(f"{name}: nmi {r['nmi']:.3f}  ari {r['ari']:.3f}  acc {r['acc']:.3f}  "
            f"purity {r['purity']:.3f}")
  return 0
