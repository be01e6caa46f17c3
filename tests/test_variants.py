"""What each variant declares (`Variant.data_kind`, `latent`, `outputs`) is what its model has:
the API class, eval, generate, export and the reports read the declaration instead of probing
the model, so a wrong declaration would silently skip or break them."""

import dataclasses

import pytest

from conftest import load_config
from jaxvae import errors
from jaxvae.data import dataset
from jaxvae.variants import registry

# One config per variant (the `small` presets: what the suite trains).
CONFIGS = {
  "basic_vae": "basic_vae.py:small",
  "conv_vae": "conv_vae.py:small",
  "spectral_vae": "spectral_vae.py:small",
  "harmonic_vae": "harmonic_vae.py:small",
  "music_transformer": "music_transformer_vaegan.py:small",
  "multimodal_vae": "multimodal_vae.py:small",
  "vade": "vade.py:small",
  "puzzle_vqvae": "puzzle_vqvae.py:small",
  "vocoder": "vocoder.py:small",
  "wave_vae": "wave_vae.py:small",
}


def _model(config):
  spec = dataset.spec_from_config(config)
  if "lyrics" in registry.get(config.model.name).outputs:
    spec = dataclasses.replace(spec, lyrics_dim=8)
  return registry.get(config.model.name).build_model(config.model, spec, dtype=config.dtype)


def test_every_variant_has_a_config_here():
  assert sorted(CONFIGS) == sorted(registry.names())


@pytest.mark.parametrize(
  "name, stage", [(n, "1") for n in sorted(CONFIGS)] + [("music_transformer", "3")]
)
def test_the_declaration_matches_the_model(name, stage):
  config = load_config(CONFIGS[name], {"stage": stage} if name == "music_transformer" else {})
  variant, model = registry.get(name), _model(config)
  latent = variant.latent_kind(config)
  assert config.data.kind == variant.data_kind
  assert (latent == "mixture") == (hasattr(model, "sample_prior") and hasattr(model, "log_prior"))
  # A quantized bottleneck: the puzzle VQ-VAE's model.quantizer, a codec's model.bottleneck.
  m = config.model
  assert (latent == "codes") == (m.get("quantizer", m.get("bottleneck", "gaussian")) != "gaussian")
  assert ("lyrics" in variant.outputs) == hasattr(model, "decode_lyrics")
  assert ("tokens" in variant.outputs) == (variant.data_kind == "midi")
  assert ("waveform" in variant.outputs) == (
    hasattr(model, "vocode") or hasattr(model, "decode_wave")
  )
  assert ("waveform" in variant.outputs) == (config.data.feature == "waveform")
  if variant.data_kind == "audio" and variant.has_prior(config):
    assert hasattr(model, "encode") and hasattr(model, "decode")
  if name == "music_transformer":
    assert latent == ("none" if stage == "1" else "gaussian")
  if name == "wave_vae":  # the same model as a codec declares codes
    codec = load_config(CONFIGS[name], {"model.bottleneck": "rvq"})
    assert variant.latent_kind(codec) == "codes" and not variant.has_prior(codec)


def test_a_model_given_the_other_data_kind_names_the_key(tiny_overrides):
  with pytest.raises(errors.ConfigError, match="'data.kind' is 'midi'; model 'conv_vae' reads"):
    load_config("conv_vae.py:small", tiny_overrides, **{"data.kind": "midi"})
