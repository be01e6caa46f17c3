"""A config's dataset as the pipeline and the modes see it: the store (feature store for
audio, token store for MIDI: the one place the two kinds part), its splits, and its DataSpec
(derived here only: from an opened store, or predicted from the config alone).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from jaxvae import errors
from jaxvae.data import demo as demo_lib
from jaxvae.data import listing
from jaxvae.data import lyrics as lyrics_lib
from jaxvae.data import pipeline
from jaxvae.data import store as store_lib
from jaxvae.data import tokens
from jaxvae.data.spec import DataSpec
from jaxvae.symbolic import tokenizers


def open_store(config, *, progress: bool = True) -> store_lib.Store:
  """The feature store (audio) or token store (MIDI) of the config's dataset, built when
  missing."""
  if config.data.kind == "midi":
    return tokens.build(config, progress=progress)
  return store_lib.build(config, progress=progress)


@dataclasses.dataclass
class Dataset:
  """An opened dataset: its store, the train and validation examples, and their spec."""

  store: store_lib.Store
  train: pipeline.Examples
  validation: pipeline.Examples
  spec: DataSpec


def load(config, *, progress: bool = True) -> Dataset:
  """Opens (building when missing) the store and splits it; an empty validation split
  (tiny datasets) falls back to the training split."""
  store = open_store(config, progress=progress)
  lyrics = lyrics_lib.load_lyrics(config, store)
  train = pipeline.split_examples(config, store, "train", lyrics)
  validation = pipeline.split_examples(config, store, "validation", lyrics)
  if len(validation) == 0:
    logging.warning("The validation split is empty; validating on the training split.")
    validation = train
  return Dataset(store, train, validation, spec_of(store, lyrics))


def spec_of(store: store_lib.Store, lyrics=None) -> DataSpec:
  """The spec of an opened store and its lyrics embeddings (what `load` returns)."""
  return DataSpec(
    input_shape=store.shape,
    labels={k: tuple(v) for k, v in store.label_values.items()},
    lyrics_dim=lyrics.dim if lyrics is not None else 0,
    tokenizer=getattr(store, "tokenizer", None),
  )


def spec_from_config(config) -> DataSpec:
  """The DataSpec `load(config).spec` would have, without computing any features (for
  `--mode=summary` before the data is there)."""
  d = config.data
  if d.kind == "midi":  # token windows; labels matter only to conditional audio models
    return DataSpec(
      input_shape=(d.midi.seq_len,), labels={}, tokenizer=tokenizers.from_config(d.midi)
    )
  n_samples = int(round(d.seconds * d.sr))
  frames = 1 + n_samples // d.hop_length  # centered frames, as librosa
  rows = d.n_mfcc if d.feature == "mfcc" else d.n_mels
  if d.layout == "demo" and not d.sources:
    labels = {"genre": demo_lib.GENRES, "language": demo_lib.LANGUAGES}
  elif not config.model.get("cond_label") and (d.sources or not d.root):
    labels = {}  # nothing needs them: a parameter summary works before the data is there
  else:
    values: dict[str, set] = {}
    for item in listing.list_dataset(config):
      for k, v in item.labels.items():
        values.setdefault(k, set()).add(v)
    labels = {k: tuple(sorted(v)) for k, v in values.items()}
  return DataSpec(input_shape=(rows, frames), labels=labels, lyrics_dim=lyrics_dim(config))


def lyrics_dim(config) -> int:
  """Width of the run's lyrics embeddings (`data.lyrics_embeddings`), 0 without; DataError
  naming the file when it cannot be read."""
  if not config.data.get("lyrics_embeddings"):
    return 0
  path = os.path.join(config.data.lyrics_embeddings, "embeddings.npy")
  try:
    return int(np.load(path, mmap_mode="r").shape[1])
  except (OSError, ValueError, IndexError) as e:
    raise errors.DataError(f"cannot read the lyrics embeddings '{path}' ({e})") from None
