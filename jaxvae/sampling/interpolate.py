"""`--interpolate=a.mid,b.mid`: points on the line between the posterior means of two MIDI
files' first windows (framed as in the token store), decoded to MIDI with the KV-cached
sampler, and described in `interp.json`."""

from __future__ import annotations

import os

import numpy as np

from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.errors import ConfigError
from jaxvae.sampling import tokens
from jaxvae.symbolic import midi


def _first_windows(paths: list[str], config) -> np.ndarray:
  """int32 [len(paths), seq_len]: each file's first window, framed as in the token store."""
  m = config.data.midi
  try:
    return np.stack([midi.windows(midi.encode(p), m.seq_len, m.overlap)[0] for p in paths])
  except errors.MidiError as e:
    raise ConfigError(f"--interpolate: {e}") from None


def check_latent(run, config) -> None:
  if not run.model.cfg.is_vae:
    raise ConfigError(
      f"--interpolate needs a latent space, but config key 'stage' is "
      f"{config.model.stage} (the plain transformer); use a stage 2 or 3 run"
    )


def read_inputs(interpolate: str, config) -> tuple[list[str], np.ndarray]:
  """The two files of `--interpolate` and their first windows, read before any model work
  (a missing or broken file is a one-line error)."""
  if config.data.kind != "midi":
    raise ConfigError(
      f"--interpolate is for MIDI models (config key 'data.kind' is '{config.data.kind}')"
    )
  paths = [p.strip() for p in interpolate.split(",")]
  if len(paths) != 2 or not all(paths):
    raise ConfigError(f"--interpolate={interpolate!r}: expected two MIDI files, 'a.mid,b.mid'")
  return paths, _first_windows(paths, config)


def write_interpolation(
  run, state, config, paths: list[str], windows: np.ndarray, out_dir: str, seed: int
) -> dict:
  """Decodes points on the line between the latents of two MIDI files' first windows;
  returns the record written to `interp.json`."""
  steps = config.generate.interpolation_steps
  z_ends = np.asarray(tokens.encode(run.model, {"params": state.params}, windows))
  z = tokens.interpolate(z_ends[0], z_ends[1], steps)
  files = tokens.write_midi(tokens.sample(run, state, config, steps, seed, z=z), out_dir, "interp")
  g = config.generate
  record = {
    "a": paths[0],
    "b": paths[1],
    "steps": steps,
    "alpha": np.linspace(0.0, 1.0, steps).tolist(),
    "files": files,
    "z_a": z_ends[0].tolist(),
    "z_b": z_ends[1].tolist(),
    "num_tokens": g.num_tokens,
    "temperature": g.temperature,
    "top_k": g.top_k,
    "top_p": g.top_p,
    "seed": seed,
    "step": int(state.step),
  }
  workdir_lib.write_json(os.path.join(out_dir, "interp.json"), record, indent=2)
  return record
