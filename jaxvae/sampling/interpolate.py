"""Latent paths (`slerp`, `interpolation_path`: the API's and the CLI's), a MIDI file's
windows framed as in the token store (`file_windows`), and `--interpolate=a.mid,b.mid`: points
on the line between the posterior means of two MIDI files' first windows, decoded to MIDI with
the KV-cached sampler and described in `interp.json`."""

from __future__ import annotations

import os

import numpy as np

from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.data import tokens as tokens_data
from jaxvae.errors import ConfigError
from jaxvae.sampling import tokens
from jaxvae.variants import registry


def file_windows(source, config, tokenizer) -> np.ndarray:
  """int32 [n, seq_len]: a MIDI file's (path or PrettyMIDI) windows by the run's `tokenizer`,
  framed and cut as in the token store. Raises MidiError naming the file."""
  return tokens_data.piece_windows(tokenizer.encode(source), tokens_data.token_params(config))


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation between vectors `a` and `b` at fractions `t` `[T, 1]`; the
  straight line where they are (anti)parallel."""
  na, nb = np.linalg.norm(a), np.linalg.norm(b)
  cos = float(np.dot(a, b) / max(na * nb, 1e-12))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if omega < 1e-4 or abs(np.pi - omega) < 1e-4:
    return ((1 - t) * a + t * b).astype(np.float32)
  return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def interpolation_path(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
  """`[steps, d]` latents from `a` to `b`: 'slerp' or 'lerp'."""
  if method not in ("slerp", "lerp"):
    raise errors.ConfigError(f"method={method!r}; expected 'slerp' or 'lerp'")
  if steps < 2:
    raise errors.ConfigError(f"steps={steps}; expected at least 2")
  t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
  return slerp(a, b, t) if method == "slerp" else ((1 - t) * a + t * b).astype(np.float32)


def _first_windows(paths: list[str], config, tokenizer) -> np.ndarray:
  """int32 [len(paths), seq_len]: each file's first window, framed as in the token store."""
  try:
    return np.stack([file_windows(p, config, tokenizer)[0] for p in paths])
  except errors.MidiError as e:
    raise ConfigError(f"--interpolate: {e}") from None


def check_latent(job, config) -> None:
  if not job.model.cfg.is_vae:
    raise ConfigError(
      f"--interpolate needs a latent space, but config key 'stage' is "
      f"{config.model.stage} (the plain transformer); use a stage 2 or 3 run"
    )


def read_inputs(interpolate: str, config, tokenizer) -> tuple[list[str], np.ndarray]:
  """The two files of `--interpolate` and their first windows, read before any model work
  (a missing or broken file is a one-line error)."""
  if registry.get(config.model.name).data_kind != "midi":
    raise ConfigError(
      f"--interpolate=a.mid,b.mid is for MIDI models; model '{config.model.name}' reads "
      "audio (its --interpolate takes a.wav,b.wav)"
    )
  paths = [p.strip() for p in interpolate.split(",")]
  if len(paths) != 2 or not all(paths):
    raise ConfigError(f"--interpolate={interpolate!r}: expected two MIDI files, 'a.mid,b.mid'")
  return paths, _first_windows(paths, config, tokenizer)


def write_interpolation(
  job, state, config, paths: list[str], windows: np.ndarray, out_dir: str, seed: int
) -> dict:
  """Decodes points on the line between the latents of two MIDI files' first windows;
  returns the record written to `interp.json`."""
  steps = config.generate.interpolation_steps
  z_ends = np.asarray(tokens.encode(job.model, {"params": state.params}, windows))
  z = interpolation_path(z_ends[0], z_ends[1], steps, "lerp")
  sampled = tokens.sample(job, state, config, steps, seed, z=z)
  files = tokens.write_midi(sampled, out_dir, job.spec.tokenizer, "interp")
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
