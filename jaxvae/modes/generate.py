"""`--mode=generate`: new spectrograms from the prior, optionally conditioned on a label
value, written as `.npy`, PNG, and Griffin-Lim audio (WAV) under `DIR/generate/`.

Token models write MIDI instead: `sample_XX.mid` (+ the tokens as `.npy`) sampled with the
KV-cached sampler (from the prior in VAE stages), or with `--interpolate=a.mid,b.mid` (stages 2
and 3) `interp_XX.mid` decoded from `generate.interpolation_steps` latents on the line between
the posterior means of the two files' first windows, described in `interp.json`.

Also `features_to_audio`, the one path from a model's (normalized) output back to sound,
used by reports too.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.evaluators import clustering as analysis
from jaxvae.modes import evaluate as evaluate_lib
from jaxvae.audio import features
from jaxvae.training import loop as train
from jaxvae import workdir as workdir_lib
from jaxvae.config.loading import ConfigError
from jaxvae.data import store as store_lib


def to_feature_units(x: np.ndarray, store, config) -> np.ndarray:
  """Model space (normalized) -> the store's units (dB or log1p of mel power)."""
  return store_lib.denormalize(np.asarray(x, np.float64), store.manifest["stats"],
                               config.data.normalize)


def features_to_audio(x: np.ndarray, store, config, n_iter: int = 32) -> np.ndarray:
  """One normalized mel spectrogram [n_mels, frames] -> waveform (Griffin-Lim)."""
  d = config.data
  if d.feature != "mel":
    raise ConfigError(f"config key 'data.feature' is '{d.feature}': only mel features "
                      "can be turned back into audio")
  units = to_feature_units(x, store, config)
  power = np.expm1(np.maximum(units, 0.0)) if d.scale == "log1p" else np.asarray(
      features.db_to_power(units))
  return features.mel_to_audio(power, sr=d.sr, n_fft=d.n_fft, hop_length=d.hop_length,
                               n_iter=n_iter)


def _condition_batch(run, config, condition: str | None, n: int) -> dict:
  """The label inputs a conditional decoder reads (one class id for every sample)."""
  batch = {"mask": jnp.ones((n,), jnp.float32)}
  for name in run.store.label_values:
    batch[f"label_{name}"] = jnp.full((n,), -1, jnp.int32)
  label = config.model.get("cond_label", "")
  if condition is not None:
    if not label:
      raise ConfigError(f"--condition={condition!r} given, but model '{config.model.name}' "
                        "is not conditional (config key model.cond_label is empty)")
    values = run.store.label_values[label]
    if condition not in values:
      raise ConfigError(f"--condition={condition!r} is not a value of label '{label}'; "
                        f"expected one of {', '.join(values)}")
    batch[f"label_{label}"] = jnp.full((n,), values.index(condition), jnp.int32)
  return batch


def sample(run, state, config, condition: str | None, n: int, seed: int) -> np.ndarray:
  """Decodes z ~ N(0, I) to normalized spectrograms [n, n_mels, frames]."""
  if not hasattr(run.model, "decode") or "latent_dim" not in config.model:
    raise ConfigError(f"model '{config.model.name}' has no Gaussian prior to sample from")
  batch = _condition_batch(run, config, condition, n)
  variables = {"params": state.params, **state.model_state}
  key = jax.random.PRNGKey(seed)
  if hasattr(run.model, "sample_prior"):  # e.g. VaDE: its prior is the learned GMM
    z = run.model.apply(variables, n, method=run.model.sample_prior, rngs={"sample": key})
  else:
    z = jax.random.normal(key, (n, config.model.latent_dim))
  return np.asarray(jax.jit(lambda v, z, b: run.model.apply(
      v, z, b, False, method=run.model.decode))(variables, z, batch))


def sample_tokens(run, state, config, num_samples: int, seed: int, z=None) -> np.ndarray:
  """int32 [num_samples, 1 + generate.num_tokens]: START, then sampled ids (prior z in VAE
  stages unless `z` is given)."""
  from jaxvae.sampling import tokens as token_sampling
  g = config.generate
  return np.asarray(token_sampling.generate(
      run.model, {"params": state.params}, jax.random.PRNGKey(seed), num_tokens=g.num_tokens,
      batch_size=num_samples, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, z=z))


def write_midi(tokens: np.ndarray, out_dir: str, prefix: str = "sample") -> list[str]:
  """Each token row -> `out_dir/<prefix>_XX.mid` and its tokens as `.npy`."""
  from jaxvae.symbolic import midi
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for i, seq in enumerate(tokens):
    path = os.path.join(out_dir, f"{prefix}_{i:02d}.mid")
    midi.decode(seq).write(path)
    np.save(path[:-4] + ".npy", np.asarray(seq, np.int32))
    paths.append(path)
  return paths


def _first_windows(paths: list[str], config) -> np.ndarray:
  """int32 [len(paths), seq_len]: each file's first window, framed as in the token store."""
  from jaxvae.symbolic import midi
  m = config.data.midi
  try:
    return np.stack([midi.windows(midi.encode(p), m.seq_len, m.overlap)[0] for p in paths])
  except midi.MidiError as e:
    raise ConfigError(f"--interpolate: {e}") from None


def _check_latent(run, config) -> None:
  if not run.model.cfg.is_vae:
    raise ConfigError(f"--interpolate needs a latent space, but config key 'stage' is "
                      f"{config.model.stage} (the plain transformer); use a stage 2 or 3 run")


def _interpolation_inputs(interpolate: str, config) -> tuple[list[str], np.ndarray]:
  """The two files of `--interpolate` and their first windows, read before any model work
  (a missing or broken file is a one-line error)."""
  if config.data.kind != "midi":
    raise ConfigError("--interpolate is for MIDI models (config key 'data.kind' is "
                      f"'{config.data.kind}')")
  paths = [p.strip() for p in interpolate.split(",")]
  if len(paths) != 2 or not all(paths):
    raise ConfigError(f"--interpolate={interpolate!r}: expected two MIDI files, "
                      "'a.mid,b.mid'")
  return paths, _first_windows(paths, config)


def interpolate_midi(run, state, config, paths: list[str], windows: np.ndarray, out_dir: str,
                     seed: int) -> dict:
  """Decodes points on the line between the latents of two MIDI files' first windows;
  returns the record written to `interp.json`."""
  from jaxvae.sampling import tokens as token_sampling
  steps = config.generate.interpolation_steps
  z_ends = np.asarray(token_sampling.encode(run.model, {"params": state.params}, windows))
  z = token_sampling.interpolate(z_ends[0], z_ends[1], steps)
  files = write_midi(sample_tokens(run, state, config, steps, seed, z=z), out_dir, "interp")
  g = config.generate
  record = {"a": paths[0], "b": paths[1], "steps": steps,
            "alpha": np.linspace(0.0, 1.0, steps).tolist(), "files": files,
            "z_a": z_ends[0].tolist(), "z_b": z_ends[1].tolist(),
            "num_tokens": g.num_tokens, "temperature": g.temperature, "top_k": g.top_k,
            "top_p": g.top_p, "seed": seed, "step": int(state.step)}
  workdir_lib.write_json(os.path.join(out_dir, "interp.json"), record, indent=2)
  return record


def run_generate(config, workdir: str, condition: str | None = None, num_samples: int = 4,
                 seed: int = 0, interpolate: str | None = None) -> int:
  if interpolate is not None:
    paths, windows = _interpolation_inputs(interpolate, config)
  run = train.setup(config)
  if interpolate is not None:
    _check_latent(run, config)
  state, _ = evaluate_lib.restore(run, workdir)
  if config.data.kind == "midi":
    out_dir = os.path.join(workdir, "generate")
    os.makedirs(out_dir, exist_ok=True)
    if interpolate is not None:
      record = interpolate_midi(run, state, config, paths, windows, out_dir, seed)
      print(f"wrote {record['steps']} interpolation steps from {paths[0]} to {paths[1]} "
            f"(|z_b - z_a| = {np.linalg.norm(np.subtract(record['z_b'], record['z_a'])):.3f}) "
            f"to {out_dir}")
      return 0
    paths = write_midi(sample_tokens(run, state, config, num_samples, seed), out_dir)
    print(f"wrote {len(paths)} MIDI files to {out_dir}")
    return 0
  specs = sample(run, state, config, condition, num_samples, seed)
  tag = condition or "prior"
  out_dir = os.path.join(workdir, "generate")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for i, x in enumerate(specs):
    stem = os.path.join(out_dir, f"{tag}_{i:02d}")
    np.save(stem + ".npy", to_feature_units(x, run.store, config).astype(np.float32))
    if config.data.feature == "mel":
      features.write_wav(stem + ".wav", features_to_audio(x, run.store, config), config.data.sr)
    written.append(stem)
  analysis.plot_spectrograms(specs, os.path.join(out_dir, f"{tag}.png"),
                             titles=[f"{tag} {i}" for i in range(len(specs))])
  workdir_lib.write_json(os.path.join(out_dir, f"{tag}.json"), {
      "condition": condition, "num_samples": num_samples, "seed": seed, "files": written,
      "step": int(state.step)}, indent=2)
  print(f"wrote {num_samples} samples ({tag}) to {out_dir}")
  return 0
