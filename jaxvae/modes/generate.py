"""`--mode=generate`: new spectrograms from the prior, optionally conditioned on a label value
(`--condition`), written as `.npy`, PNG, and Griffin-Lim audio (WAV) under `DIR/generate/`.
Token models write MIDI instead: `sample_XX.mid` (+ the tokens as `.npy`) sampled with the
KV-cached sampler (from the prior in VAE stages), or with `--interpolate=a.mid,b.mid` (stages 2
and 3) `interp_XX.mid` decoded from `generate.interpolation_steps` latents on the line between
the posterior means of the two files' first windows, described in `interp.json`.
"""

from __future__ import annotations

import os

import numpy as np

from jaxvae import workdir as workdir_lib
from jaxvae.audio import features
from jaxvae.evaluators import plots
from jaxvae.sampling import interpolate as interpolate_lib
from jaxvae.sampling import prior
from jaxvae.sampling import tokens
from jaxvae.training import builder
from jaxvae.training import checkpoint


def run(config, workdir: str, args) -> int:
  condition, num_samples, seed = args.condition, args.num_samples, args.seed
  interpolate = args.interpolate
  if interpolate is not None:  # a missing or broken file is reported before any model work
    paths, windows = interpolate_lib.read_inputs(interpolate, config)
  job = builder.setup(config)
  if interpolate is not None:
    interpolate_lib.check_latent(job, config)
  state, _ = checkpoint.restore(workdir, job.state)
  out_dir = os.path.join(workdir, "generate")
  os.makedirs(out_dir, exist_ok=True)
  if config.data.kind == "midi":
    if interpolate is not None:
      record = interpolate_lib.write_interpolation(
        job, state, config, paths, windows, out_dir, seed
      )
      print(
        f"wrote {record['steps']} interpolation steps from {paths[0]} to {paths[1]} "
        f"(|z_b - z_a| = {np.linalg.norm(np.subtract(record['z_b'], record['z_a'])):.3f}) "
        f"to {out_dir}"
      )
      return 0
    files = tokens.write_midi(tokens.sample(job, state, config, num_samples, seed), out_dir)
    print(f"wrote {len(files)} MIDI files to {out_dir}")
    return 0
  specs = prior.sample(job, state, config, condition, num_samples, seed)
  tag = condition or "prior"
  written = []
  for i, x in enumerate(specs):
    stem = os.path.join(out_dir, f"{tag}_{i:02d}")
    np.save(stem + ".npy", prior.to_feature_units(x, job.store, config).astype(np.float32))
    if config.data.feature == "mel":
      features.write_wav(
        stem + ".wav", prior.features_to_audio(x, job.store, config), config.data.sr
      )
    written.append(stem)
  plots.plot_spectrograms(
    specs, os.path.join(out_dir, f"{tag}.png"), titles=[f"{tag} {i}" for i in range(len(specs))]
  )
  workdir_lib.write_json(
    os.path.join(out_dir, f"{tag}.json"),
    {
      "condition": condition,
      "num_samples": num_samples,
      "seed": seed,
      "files": written,
      "step": int(state.step),
    },
    indent=2,
  )
  print(f"wrote {num_samples} samples ({tag}) to {out_dir}")
  return 0
