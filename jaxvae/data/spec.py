"""What a model needs to know about the data it will see (derived in `jaxvae.data.dataset`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Shapes and label vocabularies of a feature store, passed to model builders.

  input_shape: (n_mels, frames) of `batch['x']`.
  labels: label column name -> its values (the index is the class id in `label_<name>`).
  lyrics_dim: width of `batch['lyrics']`, or 0 when the store has no lyrics embeddings.
  """

  input_shape: tuple[int, int]
  labels: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  lyrics_dim: int = 0

  def num_classes(self, label: str) -> int:
    if label not in self.labels:
      known = ", ".join(sorted(self.labels)) or "none"
      raise KeyError(f"label column '{label}' is not in the data (label columns: {known})")
    return len(self.labels[label])
