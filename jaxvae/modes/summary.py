"""The small modes of `jaxvae.main`: summary, preprocess, validate, eval, clear."""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.training import writer as monitor
from jaxvae.variants import registry
from jaxvae import workdir as workdir_lib
from jaxvae.config.loading import ConfigError
from jaxvae.audio import decode as audio_lib
from jaxvae.data import demo as demo_lib
from jaxvae.data import store as store_lib
from jaxvae.data.spec import DataSpec


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir_lib.write_json(path, value, indent=2)


def spec_from_config(config) -> DataSpec:
  """The DataSpec a run would have, without computing any features."""
  d = config.data
  if d.kind == "midi":  # token windows; labels matter only to conditional audio models
    return DataSpec(input_shape=(d.midi.seq_len,), labels={})
  n_samples = int(round(d.seconds * d.sr))
  frames = 1 + n_samples // d.hop_length  # centered frames, as librosa
  rows = d.n_mfcc if d.feature == "mfcc" else d.n_mels
  if d.layout == "demo":
    labels = {"genre": demo_lib.GENRES, "language": demo_lib.LANGUAGES}
  elif not d.root and not config.model.get("cond_label"):
    labels = {}  # nothing needs them: a parameter summary works before the data is there
  else:
    values: dict[str, set] = {}
    for item in store_lib.list_dataset(config):
      for k, v in item.labels.items():
        values.setdefault(k, set()).add(v)
    labels = {k: tuple(sorted(v)) for k, v in values.items()}
  lyrics_dim = 0
  if d.lyrics_embeddings:
    emb = np.load(os.path.join(d.lyrics_embeddings, "embeddings.npy"), mmap_mode="r")
    lyrics_dim = emb.shape[1]
  return DataSpec(input_shape=(rows, frames), labels=labels, lyrics_dim=lyrics_dim)


def dummy_batch(spec: DataSpec, batch_size: int = 2) -> dict:
  batch = {"mask": jnp.ones((batch_size,), jnp.float32)}
  if len(spec.input_shape) == 1:  # token windows
    batch["tokens"] = jnp.zeros((batch_size, *spec.input_shape), jnp.int32)
  else:
    batch["x"] = jnp.zeros((batch_size, *spec.input_shape), jnp.float32)
  for name in spec.labels:
    batch[f"label_{name}"] = jnp.zeros((batch_size,), jnp.int32)
  if spec.lyrics_dim:
    batch["lyrics"] = jnp.zeros((batch_size, spec.lyrics_dim), jnp.float32)
    batch["lyrics_mask"] = jnp.ones((batch_size,), jnp.float32)
  return batch


def parameter_table(params) -> tuple[list[tuple[str, tuple, int]], int]:
  rows = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    rows.append((name, tuple(leaf.shape), int(np.prod(leaf.shape))))
  return rows, sum(r[2] for r in rows)


def summary(config, workdir: str) -> int:
  """Prints the parameter table and `total params: N`; writes summary.json."""
  from jaxvae.training import loop as train
  spec = spec_from_config(config)
  build = registry.get(config.model.name).build_model
  try:
    model = build(config.model, spec, dtype=config.dtype)
  except ValueError:
    if spec.lyrics_dim or config.data.kind != "audio":
      raise
    # A lyrics model summarized before its embeddings exist: assume xlm-roberta-base's width.
    spec = dataclasses.replace(spec, lyrics_dim=768)
    model = build(config.model, spec, dtype=config.dtype)
    print("(no data.lyrics_embeddings: assuming 768-d lyrics embeddings, xlm-roberta-base)")
  variables = jax.eval_shape(lambda: train.init_variables(
      model, dummy_batch(spec), jax.random.PRNGKey(0)))
  rows, total = parameter_table(variables["params"])
  width = max(len(r[0]) for r in rows)
  print(f"{'parameter':<{width}}  {'shape':>20}  {'count':>12}")
  for name, shape, count in rows:
    print(f"{name:<{width}}  {str(shape):>20}  {count:>12,}")
  print(f"input shape: {spec.input_shape}")
  print(f"total params: {total}")
  _write_json(os.path.join(workdir, "summary.json"), {
      "model": config.model.name, "total_params": total, "input_shape": spec.input_shape,
      "parameters": [{"name": n, "shape": s, "count": c} for n, s, c in rows]})
  return 0


def preprocess(config, workdir: str) -> int:
  from jaxvae.training import loop as train
  store = train.open_data(config)
  m = store.manifest
  print(f"feature store: {store.path}")
  print(f"examples: {len(m['examples'])} of shape {list(store.shape)} from "
        f"{m['dataset']['num_files']} files; bad files: {len(m['bad'])}")
  for b in m["bad"][:20]:
    print(f"  bad: {b['path']}: {b['reason']} ({b['action']})")
  _write_json(os.path.join(workdir, "preprocess.json"), {
      "store": store.path, "examples": len(m["examples"]), "shape": list(store.shape),
      "bad": m["bad"], "label_values": m["label_values"]})
  return 0


def validate(config, workdir: str) -> int:
  """Scans the dataset; non-zero exit only when no usable file remains."""
  items = store_lib.list_dataset(config)
  report = audio_lib.validate_items(items, sr=config.data.sr, min_seconds=config.data.min_seconds)
  print(audio_lib.format_validation_table(report))
  _write_json(os.path.join(workdir, "validate.json"), report)
  if report["ok"] == 0:
    print(f"error: no usable audio file among {len(items)}")
    return 1
  return 0


def clear(workdir: str) -> int:
  """Removes a run's outputs; refuses folders that are not jaxvae workdirs."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    print(f"nothing to clear: '{workdir}' does not exist")
    return 0
  if not monitor.is_workdir(workdir):
    raise ConfigError(f"--clear refuses '{workdir}': it is not a jaxvae workdir "
                      f"(no {monitor.MARKER})")
  for name in monitor.RUN_OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  print(f"cleared {workdir}")
  return 0
