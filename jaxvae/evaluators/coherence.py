"""Cross-modal coherence of a model that decodes lyrics from its latent (the multimodal VAE):
whether the lyrics it decodes from the audio alone carry the labels that real lyrics carry,
as MMVAE and MoPoE-VAE judge a joint latent by generating one modality from another.

The judge is the same for every source: the nearest class centroid (cosine) of the training
clips' real lyrics embeddings. Its accuracy on the validation clips' real lyrics is the
ceiling; on lyrics decoded from the joint posterior (audio + lyrics) it measures the lyrics'
reconstruction; from the audio alone (no lyrics given) it measures what the audio's posterior
carries over to the other modality.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxvae.data import pipeline

UNKNOWN = -1
JUDGE = "nearest class centroid (cosine) of the training clips' real lyrics embeddings"


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def centroid_accuracy(
  reference: np.ndarray, reference_labels: np.ndarray, queries: dict, labels: np.ndarray
) -> dict | None:
  """Accuracy of each `queries[name]` [N, D] against `labels` [N] when each is given the label
  of the nearest class centroid (cosine) of `reference` [M, D] (labelled `reference_labels`).
  Unknown labels (-1) are left out on both sides, and so are queries of a class the
  reference lacks. Returns {name: accuracy, "n" (queries scored), "chance" (the majority
  class's share among them)}; None with fewer than 2 reference classes or nothing to score."""
  keep = reference_labels != UNKNOWN
  classes = np.unique(reference_labels[keep])
  scored = np.isin(labels, classes)
  if len(classes) < 2 or not scored.any():
    return None
  ref = _unit(np.asarray(reference, np.float64)[keep])
  centroids = _unit(np.stack([ref[reference_labels[keep] == c].mean(0) for c in classes]))
  y = labels[scored]
  out = {}
  for name, q in queries.items():
    pred = classes[np.argmax(_unit(np.asarray(q, np.float64)[scored]) @ centroids.T, axis=1)]
    out[name] = float(np.mean(pred == y))
  counts = np.unique(y, return_counts=True)[1]
  return out | {"n": int(scored.sum()), "chance": float(counts.max() / counts.sum())}


def lyrics_coherence(job, state, examples, labels: dict, train: np.ndarray, val: np.ndarray):
  """{label: {"real", "joint", "audio_only", "n", "chance"}} over the validation examples
  with lyrics (`val`, a boolean mask over `examples`; the centroids from the `train` ones'
  real lyrics), plus "judge" and "split"; {"available": False, "reason"} where it cannot be
  measured. Only the validation examples go through the model (twice: with and without
  their lyrics)."""
  if examples.lyrics is None:
    return {"available": False, "reason": "the run has no lyrics embeddings"}
  lyrics = examples.lyrics
  rows = examples.indices
  ref = rows[train][lyrics.mask[rows[train]] > 0]
  queries = rows[val][lyrics.mask[rows[val]] > 0]
  if not len(queries):
    return {"available": False, "reason": "no validation example has lyrics"}
  decode = _decoder(job.model)
  variables = {"params": state.params, **state.model_state}
  subset = pipeline.Examples(examples.store, queries, examples.normalize, lyrics)
  size = job.config.train.batch_size
  chunks: dict[str, list] = {}
  for batch in pipeline.eval_batches(subset, size):
    real = batch["mask"] > 0
    alone = dict(batch, lyrics_mask=np.zeros_like(batch["lyrics_mask"]))
    for name, b in (("joint", batch), ("audio_only", alone)):
      z = job.put({"z": job.gather(job.forward(state, job.put(b))["mu"])})["z"]
      chunks.setdefault(name, []).append(job.gather(decode(variables, z))[real])
  decoded = {k: np.concatenate(v) for k, v in chunks.items()}
  decoded["real"] = lyrics.vectors[queries]
  position = {int(r): i for i, r in enumerate(rows)}
  of = lambda y, which: y[[position[int(r)] for r in which]]
  out: dict = {"available": True, "judge": JUDGE, "split": "validation"}
  for name, y in labels.items():
    scores = centroid_accuracy(lyrics.vectors[ref], of(y, ref), decoded, of(y, queries))
    if scores is not None:
      out[name] = scores
  return out


@functools.lru_cache(maxsize=4)
def _decoder(model):
  """The jitted `decode_lyrics` of a model (one per model, as `sampling.prior`'s decoder)."""
  return jax.jit(lambda variables, z: model.apply(variables, z, method="decode_lyrics"))
