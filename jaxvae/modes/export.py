"""`--mode=export`: the trained encoder and decoder as serialized `jax.export` artifacts
(StableHLO, the weights inside) with a polymorphic batch dimension, plus `export.json`, into
`DIR/export/`. They run in any process with jax and numpy, without jaxvae:

    import json, numpy as np, jax
    from jax import export
    meta = json.load(open("DIR/export/export.json"))
    enc = export.deserialize(open("DIR/export/encoder.jax_export", "rb").read())
    mu, logvar = enc.call(np.zeros((3, *meta["input_shape"]), np.float32))

Inputs are normalized features (`export.json` has the feature settings and the normalization
statistics needed to make them from audio). Audio VAEs: `encoder(x) -> (mu, logvar)`,
`decoder(z[, label]) -> x` (a conditional model's decoder takes the class id of
`export.json`'s `condition_label`, -1 for none). The VQ-VAE: `encoder(x) -> codes` (int32),
`decoder(codes) -> x`. Exported for the platform of this process plus the CPU.
"""

from __future__ import annotations

import os

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from jaxvae import api
from jaxvae import errors
from jaxvae import workdir as workdir_lib
from jaxvae.data import store as store_lib
from jaxvae.sampling import prior

FORMAT_VERSION = 1


def run(config, workdir: str, args) -> int:
  del config, args  # the run's own config (from the workdir) is what gets exported
  model = api.load(workdir)
  out_dir = os.path.join(workdir, "export")
  os.makedirs(out_dir, exist_ok=True)
  meta = write(model, out_dir)
  print(
    f"wrote {', '.join(meta['files'])} and export.json to {out_dir} "
    f"({model.config.model.name}, step {model.step}, batch dimension polymorphic)"
  )
  return 0


def write(model, out_dir: str) -> dict:
  """Exports `model` (an `api.AudioModel` or `api.VQModel`) into `out_dir`; returns the
  content of `export.json`."""
  (b,) = jax_export.symbolic_shape("b")
  shape = tuple(model.spec.input_shape)
  x_spec = jax.ShapeDtypeStruct((b, *shape), jnp.float32)
  # jax.export's names ('cuda', 'rocm', 'tpu', 'cpu'), not the backend's ('gpu').
  platforms = sorted({jax_export.default_export_platform(), "cpu"})
  functions = _functions(model, b, x_spec)
  files = []
  for name, (fn, specs) in functions.items():
    exported = jax_export.export(jax.jit(fn), platforms=platforms)(*specs)
    path = os.path.join(out_dir, f"{name}.jax_export")
    with workdir_lib.atomic_path(path) as tmp, open(tmp, "wb") as f:
      f.write(exported.serialize())
    files.append(os.path.basename(path))
  d = model.config.data
  cond = model.config.model.get("cond_label", "")
  meta = {
    "format_version": FORMAT_VERSION,
    "model": model.config.model.name,
    "step": model.step,
    "kind": "vq" if isinstance(model, api.VQModel) else "gaussian",
    "files": files,
    "platforms": platforms,
    "input_shape": list(shape),
    "input_dtype": "float32",
    "latent_dim": getattr(model, "latent_dim", None),
    "features": store_lib.feature_params(model.config),
    "normalize": {"method": d.normalize, "stats": model.stats},
    "labels": {k: list(v) for k, v in model.spec.labels.items()},
    "condition_label": cond or None,
    "jax_version": jax.__version__,
  }
  workdir_lib.write_json(os.path.join(out_dir, "export.json"), meta, indent=2)
  return meta


def _functions(model, b, x_spec) -> dict:
  """name -> (function of arrays only, its abstract inputs): the model's own pure functions
  (`api.AudioModel.encode_fn` / `decode_fn`, `api.VQModel.codes_fn` / `decode_codes_fn`)
  with the variables as constants and every label unknown but the conditioning one."""
  variables, config = model.variables, model.config
  if model.spec.lyrics_dim:
    raise errors.ConfigError(
      f"model '{config.model.name}' reads lyrics embeddings; --mode=export covers the "
      "audio-only models and the VQ-VAE"
    )
  cond = config.model.get("cond_label", "")

  def batch_of(x, label=None):
    batch = prior.label_batch(model.spec.labels, config, None, x.shape[0])
    batch["x"] = x
    if cond and label is not None:
      batch[f"label_{cond}"] = label
    return batch

  if isinstance(model, api.VQModel):
    codes = model.encode(np.zeros((1, *model.spec.input_shape), np.float32))
    code_spec = jax.ShapeDtypeStruct((b, *codes.shape[1:]), jnp.int32)
    return {
      "encoder": (lambda x: model.codes_fn(variables, batch_of(x)), (x_spec,)),
      "decoder": (lambda c: model.decode_codes_fn(variables, c), (code_spec,)),
    }

  def zeros(z):
    return jnp.zeros((z.shape[0], *model.spec.input_shape), jnp.float32)

  z_spec = jax.ShapeDtypeStruct((b, model.latent_dim), jnp.float32)
  encoder = (lambda x: model.encode_fn(variables, batch_of(x)), (x_spec,))
  if cond:
    label_spec = jax.ShapeDtypeStruct((b,), jnp.int32)
    decoder = (
      lambda z, label: model.decode_fn(variables, z, batch_of(zeros(z), label)),
      (z_spec, label_spec),
    )
  else:
    decoder = (lambda z: model.decode_fn(variables, z, batch_of(zeros(z))), (z_spec,))
  return {"encoder": encoder, "decoder": decoder}
