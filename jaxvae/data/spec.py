"""What a model needs to know about the data it will see (derived in `jaxvae.data.dataset`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Shapes and label vocabularies of a feature store, passed to model builders.

  input_shape: (n_mels, frames) of `batch['x']`.
  labels: label column name -> its values (the index is the class id in `label_<name>`).
  lyrics_dim: width of `batch['lyrics']`, or 0 when the store has no lyrics embeddings.
  tokenizer: token windows' tokenizer (`jaxvae.symbolic.tokenizers`), None for features;
    `vocab_size` its ids (what a token model's embedding and output are sized by).
  """

  input_shape: tuple[int, int]
  labels: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  lyrics_dim: int = 0
  tokenizer: Any = None

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.planned_vocab_size if self.tokenizer is not None else 0

  def example_batch(self, batch_size: int = 2) -> dict[str, np.ndarray]:
    """A batch of zeros with this spec's keys and shapes (to initialize or build a model
    without data): `tokens` for token windows, else `x`; labels; lyrics when the spec has
    them."""
    batch = {"mask": np.ones((batch_size,), np.float32)}
    if len(self.input_shape) == 1:  # token windows
      batch["tokens"] = np.zeros((batch_size, *self.input_shape), np.int32)
    else:
      batch["x"] = np.zeros((batch_size, *self.input_shape), np.float32)
    for name in self.labels:
      batch[f"label_{name}"] = np.zeros((batch_size,), np.int32)
    if self.lyrics_dim:
      batch["lyrics"] = np.zeros((batch_size, self.lyrics_dim), np.float32)
      batch["lyrics_mask"] = np.ones((batch_size,), np.float32)
    return batch

  def num_classes(self, label: str) -> int:
    if label not in self.labels:
      known = ", ".join(sorted(self.labels)) or "none"
      raise KeyError(f"label column '{label}' is not in the data (label columns: {known})")
    return len(self.labels[label])
