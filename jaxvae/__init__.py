"""jaxvae: music and audio VAEs in JAX/Flax, trained from one config-driven command
(`python -m jaxvae.main`), and used from Python with `jaxvae.load(workdir)`."""


def load(workdir: str, which: str = "best", vocoder=None):
  """The trained model of a workdir (see `jaxvae.api.load`; `vocoder`: a vocoder workdir its
  `to_audio` uses instead of Griffin-Lim). Imported on first use, so that
  `import jaxvae.errors` and the command line stay light."""
  from jaxvae import api  # noqa: PLC0415 - the package facade imports lazily

  return api.load(workdir, which, vocoder=vocoder)
