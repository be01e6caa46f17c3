"""`--mode=generate`: new spectrograms from the prior, optionally conditioned on a label value
(`--condition`), written as `.npy`, PNG, and Griffin-Lim audio (WAV) under `DIR/generate/`;
`--prior=gmm` samples a Gaussian mixture fitted to the training posteriors instead
(`<tag>_gmm_XX`).
Token models write MIDI instead: `sample_XX.mid` (+ the tokens as `.npy`) sampled with the
KV-cached sampler (from the prior in VAE stages), or with `--interpolate=a.mid,b.mid` (stages 2
and 3) `interp_XX.mid` decoded from `generate.interpolation_steps` latents on the line between
the posterior means of the two files' first windows, described in `interp.json`. Audio VAEs
take `--interpolate=a.wav,b.wav` too, and `--attribute=label:from->to --input=clip.wav
[--strength=1.0]` (attribute vectors, `jaxvae.api`). The waveform VAE writes `prior_XX.wav`
(`generate.seconds` long) or, with `--interpolate=a.wav,b.wav`, `interp_XX.wav`.
"""

from __future__ import annotations

import os

import numpy as np

from jaxvae import api
from jaxvae import workdir as workdir_lib
from jaxvae.audio import decode as decode_lib
from jaxvae.audio import synthesis
from jaxvae.errors import ConfigError
from jaxvae.evaluators import plots
from jaxvae.sampling import interpolate as interpolate_lib
from jaxvae.sampling import prior
from jaxvae.sampling import tokens
from jaxvae.sampling import vocoder as vocoder_lib
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib
from jaxvae.variants import registry


def add_arguments(group) -> None:
  """The flags of `--mode=generate` (`jaxvae.main` adds them to its parser)."""
  group.add_argument(
    "--condition", default=None, help="the label value to condition on (e.g. --condition=rock)"
  )
  group.add_argument("--num_samples", type=int, default=4, help="how many samples")
  group.add_argument("--seed", type=int, default=0, help="sampling seed")
  group.add_argument(
    "--interpolate",
    default=None,
    metavar="A.mid,B.mid",
    help="MIDI stages 2-3: A.mid,B.mid; audio VAEs: a.wav,b.wav: decode "
    "generate.interpolation_steps latents from A's to B's -> interp_XX",
  )
  group.add_argument(
    "--attribute",
    default=None,
    metavar="LABEL:FROM->TO",
    help="audio VAEs: move --input along the FROM->TO attribute vector (difference of the "
    "two values' mean training latents), e.g. genre:rock->pop",
  )
  group.add_argument("--strength", type=float, default=1.0, help="the --attribute scale")
  group.add_argument("--input", default=None, help="the audio file --attribute moves")
  group.add_argument(
    "--prior",
    default="model",
    choices=("model", "gmm"),
    help="audio VAEs: sample the model's prior, or a Gaussian mixture fitted to the training "
    "posteriors (eval.gmm_components components)",
  )


def check_arguments(args, parser) -> None:
  """What the flags of `--mode=generate` allow together (`parser.error`: one line, status 1)."""
  if args.prior != "model" and (args.interpolate or args.attribute):
    parser.error("--prior is for sampling, not with --interpolate or --attribute")


def run(config, workdir: str, args) -> int:
  interpolate = args.interpolate
  variant = registry.get(config.model.name)
  source = variant.waveform_from(config)
  if source == "latent":  # the waveform VAE or codec
    return _waveform(config, workdir, args)
  if source == "features":
    raise ConfigError(
      f"--mode=generate: '{workdir}' holds a vocoder, which turns features into audio; give it "
      "to a model's run with --config.generate.vocoder"
    )
  if variant.data_kind == "audio" and (interpolate is not None or args.attribute is not None):
    return _audio_latent_tools(config, workdir, args)
  if variant.data_kind == "midi" and args.prior != "model":
    raise ConfigError("--prior=gmm is for audio VAEs (a MIDI model samples its own prior)")
  inputs = None
  if interpolate is not None:  # a missing or broken file is reported before any model work
    tokenizer = writer_lib.run_tokenizer(workdir)
    inputs = interpolate_lib.read_inputs(interpolate, config, tokenizer)
  job = builder.setup(config, progress=args.progress)
  writer_lib.check_tokenizer(workdir, job.store, "the workdir")
  if interpolate is not None:
    interpolate_lib.check_latent(job, config)
  state, _ = checkpoint.restore(workdir, job.state)
  builder.check_outputs(job, state)
  out_dir = os.path.join(workdir, "generate")
  os.makedirs(out_dir, exist_ok=True)
  if variant.data_kind == "midi":
    return _midi(job, state, config, args, out_dir, inputs)
  return _audio_prior(job, state, config, args, out_dir)


def _midi(job, state, config, args, out_dir: str, inputs) -> int:
  """Token models: sampled pieces as MIDI, or with `inputs` (paths, windows) an interpolation."""
  if inputs is not None:
    paths, windows = inputs
    record = interpolate_lib.write_interpolation(
      job, state, config, paths, windows, out_dir, args.seed
    )
    print(
      f"wrote {record['steps']} interpolation steps from {paths[0]} to {paths[1]} "
      f"(|z_b - z_a| = {np.linalg.norm(np.subtract(record['z_b'], record['z_a'])):.3f}) "
      f"to {out_dir}"
    )
    return 0
  sampled = tokens.sample(job, state, config, args.num_samples, args.seed)
  files = tokens.write_midi(sampled, out_dir, job.spec.tokenizer)
  print(f"wrote {len(files)} MIDI files to {out_dir}")
  return 0


def _audio_prior(job, state, config, args, out_dir: str) -> int:
  """Mel VAEs: samples of the prior (or of a GMM fitted to the training posteriors) as
  `.npy`, WAV (through generate.vocoder, else Griffin-Lim) and one PNG, with a JSON record."""
  condition, num_samples, seed = args.condition, args.num_samples, args.seed
  vocoder = vocoder_lib.for_config(config) if config.data.feature == "mel" else None
  gmm = None
  if args.prior == "gmm":  # the post-hoc prior: a mixture fitted to the training posteriors
    gmm = prior.fit_posterior_gmm(job, state, config.eval.gmm_components, seed)
  specs = prior.sample(job, state, config, condition, num_samples, seed, gmm=gmm)
  builder.require_finite(specs, "samples from the prior", int(state.step))
  tag = (condition or "prior") + ("_gmm" if gmm is not None else "")
  written = []
  for i, x in enumerate(specs):
    stem = os.path.join(out_dir, f"{tag}_{i:02d}")
    np.save(stem + ".npy", prior.to_feature_units(x, job.store, config).astype(np.float32))
    if config.data.feature == "mel":
      synthesis.write_wav(
        stem + ".wav",
        prior.features_to_audio(x, job.store, config, vocoder=vocoder),
        config.data.sr,
      )
    written.append(stem)
  plots.plot_spectrograms(
    specs, os.path.join(out_dir, f"{tag}.png"), titles=[f"{tag} {i}" for i in range(len(specs))]
  )
  workdir_lib.write_json(
    os.path.join(out_dir, f"{tag}.json"),
    {
      "condition": condition,
      "num_samples": num_samples,
      "seed": seed,
      "prior": "gmm" if gmm is not None else "model",
      **({"gmm_components": int(gmm.n_components)} if gmm is not None else {}),
      "files": written,
      "step": int(state.step),
    },
    indent=2,
  )
  print(f"wrote {num_samples} samples ({tag}) to {out_dir}")
  return 0


def _waveform(config, workdir: str, args) -> int:
  """The waveform VAE: `--num_samples` prior samples of `generate.seconds` (0: data.seconds)
  as `prior_XX.wav`, or with `--interpolate=a.wav,b.wav` the decodings of
  `generate.interpolation_steps` latents on the slerp between the two files' encodings as
  `interp_XX.wav` (a codec: between their quantized vectors; it has no prior); each with a
  JSON record under `DIR/generate/`."""
  mel_only = {
    "--attribute": args.attribute is not None,
    "--condition": args.condition is not None,
    "--input": args.input is not None,
    "--strength": args.strength != 1.0,
    f"--prior={args.prior}": args.prior != "model",
  }
  for flag, given in mel_only.items():
    if given:
      raise ConfigError(f"{flag} is for the mel VAEs; '{workdir}' is a waveform VAE")
  if args.num_samples < 1:
    raise ConfigError(f"--num_samples={args.num_samples}: expected an integer >= 1")
  model = api.load(workdir)
  out_dir = os.path.join(workdir, "generate")
  os.makedirs(out_dir, exist_ok=True)
  if args.interpolate is not None:
    paths = _two_files(args.interpolate)
    a, b = (decode_lib.load_audio(path, model.sr) for path in paths)
    steps = config.generate.interpolation_steps
    waves = model.interpolate(a, b, steps=steps, seed=args.seed)
    tag, record = "interp", {"a": paths[0], "b": paths[1], "steps": steps, "method": "slerp"}
  else:
    seconds = float(config.generate.seconds) or float(config.data.seconds)
    frames = max(1, -(-int(round(seconds * model.sr)) // model.hop))
    waves = model.sample(args.num_samples, frames, seed=args.seed)
    tag, record = (
      "prior",
      {"num_samples": args.num_samples, "seconds": frames * model.hop / model.sr},
    )
  builder.require_finite(waves, f"{tag} waveforms", model.step)
  files = []
  for i, y in enumerate(waves):
    files.append(os.path.join(out_dir, f"{tag}_{i:02d}.wav"))
    synthesis.write_wav(files[-1], y, model.sr)
  record |= {"seed": args.seed, "files": files, "step": model.step}
  workdir_lib.write_json(os.path.join(out_dir, f"{tag}.json"), record, indent=2)
  print(f"wrote {len(files)} waveforms ({tag}) to {out_dir}")
  return 0


def _two_files(arg: str) -> list[str]:
  paths = [p.strip() for p in arg.split(",")]
  if len(paths) != 2 or not all(paths):
    raise ConfigError(f"--interpolate={arg!r}: expected two audio files, 'a.wav,b.wav'")
  return paths


def _audio_latent_tools(config, workdir: str, args) -> int:
  """Audio VAEs: `--interpolate=a.wav,b.wav` (decodings along the slerp from a's latent to
  b's, `generate.interpolation_steps` of them) and `--attribute=label:from->to --input=x.wav
  [--strength=s]` (the input's latent moved along the difference of the two values' mean
  training latents), as `.npy`, PNG and WAV under `DIR/generate/`, described in a JSON."""
  model = api.load(workdir, vocoder=vocoder_lib.for_config(config))
  if not isinstance(model, api.AudioModel):
    raise ConfigError(
      f"--interpolate and --attribute need a Gaussian latent space; model "
      f"'{config.model.name}' has a code grid (see jaxvae.load(...).encode / decode_codes)"
    )
  out_dir = os.path.join(workdir, "generate")
  os.makedirs(out_dir, exist_ok=True)
  if args.interpolate is not None:
    paths = _two_files(args.interpolate)
    steps = config.generate.interpolation_steps
    specs = model.interpolate(paths[0], paths[1], steps=steps)
    tag, record = "interp", {"a": paths[0], "b": paths[1], "steps": steps, "method": "slerp"}
  else:
    label, source, target = _parse_attribute(args.attribute)
    if not args.input:
      raise ConfigError("--attribute needs --input=FILE (the audio to move)")
    specs = model.apply_attribute(args.input, label, source, target, args.strength)
    tag = "attr"
    record = {
      "input": args.input,
      "label": label,
      "from": source,
      "to": target,
      "strength": args.strength,
      # The label whose mean training latent is nearest: the input's latent, the moved
      # latent, and the moved clip's decoding encoded again.
      "nearest_before": model.nearest_label(args.input, label)[0],
      "nearest_moved": model.nearest_label_of_latent(
        model.encode(args.input)[0] + args.strength * model.attribute_vector(label, source, target),
        label,
      )[0],
      "nearest_decoded": model.nearest_label(specs, label)[0],
    }
  builder.require_finite(specs, f"{tag} decodings", model.step)
  files = []
  for i, x in enumerate(specs):
    stem = os.path.join(out_dir, f"{tag}_{i:02d}")
    np.save(stem + ".npy", x.astype(np.float32))
    if config.data.feature == "mel":
      synthesis.write_wav(stem + ".wav", model.to_audio(x[None])[0], config.data.sr)
    files.append(stem)
  plots.plot_spectrograms(
    specs, os.path.join(out_dir, f"{tag}.png"), titles=[f"{tag} {i}" for i in range(len(specs))]
  )
  record |= {"files": files, "step": model.step}
  workdir_lib.write_json(os.path.join(out_dir, f"{tag}.json"), record, indent=2)
  print(f"wrote {len(specs)} {tag} spectrograms and WAVs to {out_dir}")
  return 0


def _parse_attribute(text: str) -> tuple[str, str, str]:
  """'genre:rock->pop' -> ('genre', 'rock', 'pop')."""
  label, _, rest = text.partition(":")
  source, _, target = rest.partition("->")
  if not (label and source and target):
    raise ConfigError(f"--attribute={text!r}: expected label:from->to, e.g. genre:rock->pop")
  return label.strip(), source.strip(), target.strip()
