"""`python -m jaxvae.main --config=configs/<name>.py[:preset] --workdir=DIR [--mode=MODE]`.

Overrides: `--config.train.epochs=3 --config.data.root=/data/gtzan`. Re-running the same
command in the same workdir resumes training from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

MODES = ("train", "eval", "analyze", "generate", "tune", "summary", "preprocess",
         "validate")


def parse_args(argv: list[str]):
  parser = argparse.ArgumentParser(prog="python -m jaxvae.main", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/<name>.py[:preset]")
  parser.add_argument("--workdir", required=True, help="run directory (the only state)")
  parser.add_argument("--mode", default="train", choices=MODES)
  parser.add_argument("--clear", action="store_true",
                      help="delete this workdir's run outputs first (no question asked)")
  parser.add_argument("--no_progress", action="store_true", help="no progress bars")
  parser.add_argument("--condition", default=None,
                      help="generate: the label value to condition on (e.g. --condition=rock)")
  parser.add_argument("--num_samples", type=int, default=4, help="generate: how many")
  parser.add_argument("--seed", type=int, default=0, help="generate: sampling seed")
  parser.add_argument("--interpolate", default=None, metavar="A.mid,B.mid",
                      help="generate (MIDI, stage 2 or 3): decode generate.interpolation_steps "
                           "latents from the first window of A to that of B -> interp_XX.mid")
  args, rest = parser.parse_known_args(argv)
  if args.interpolate is not None and args.mode != "generate":
    parser.error("--interpolate is an option of --mode=generate")
  from jaxvae.config import loading as config_lib  # light: no JAX import
  return args, config_lib.overrides_from_args(parser, rest)


def run(argv: list[str]) -> int:
  args, overrides = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      datefmt="%H:%M:%S")
  # Orbax and Grain log every checkpoint file operation at INFO through absl.
  logging.getLogger("absl").setLevel(logging.WARNING)
  # Imported after argument parsing so that `--help` and argument errors are instant.
  from jaxvae.config import loading as config_lib
  from jaxvae import errors
  from jaxvae.symbolic import midi
  from jaxvae.audio import decode as audio_lib
  from jaxvae.data import readers

  try:
    config = config_lib.load(args.config, overrides)
    return _run_mode(args, config, overrides)
  except (config_lib.ConfigError, readers.DataError, audio_lib.AudioError, midi.MidiError,
          errors.RunError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


def _run_mode(args, config, overrides) -> int:
  import jax
  from jaxvae.training import checkpoint
  from jaxvae import errors
  from jaxvae.modes import summary as modes
  from jaxvae import workdir as workdir_lib
  if config.distributed:
    from jaxvae.training import loop as train
    train.initialize_distributed()
  workdir_lib.ensure_writable(args.workdir)
  writes = args.clear or args.mode in ("train", "tune")
  with contextlib.ExitStack() as stack:
    if writes:  # one writer per workdir: --clear must not pull a live run's files away
      stack.enter_context(workdir_lib.Lock(args.workdir, jax.process_index()))
    if args.clear:
      modes.clear(args.workdir)
    if args.mode in ("eval", "generate", "analyze") and not checkpoint.saved_steps(args.workdir):
      raise errors.CheckpointError(
          f"workdir '{args.workdir}' has no checkpoint (nothing in checkpoints/ or best/); "
          f"train it first: python -m jaxvae.main --config={args.config} "
          f"--workdir={args.workdir}")
    progress = not args.no_progress
    if args.mode == "train":
      from jaxvae.training import loop as train
      train.train_and_evaluate(config, args.workdir, progress=progress)
      return 0
    if args.mode == "eval":
      from jaxvae.modes import evaluate
      return evaluate.run_eval(config, args.workdir)
    if args.mode == "generate":
      from jaxvae.modes import generate
      return generate.run_generate(config, args.workdir, args.condition, args.num_samples,
                                   args.seed, args.interpolate)
    if args.mode == "tune":
      from jaxvae.modes import tune
      return tune.run_tune(config, args.workdir, args.config, overrides)
    if args.mode == "analyze":
      from jaxvae.modes import analyze
      return analyze.run_analyze(config, args.workdir)
    return getattr(modes, args.mode)(config, args.workdir)


def main() -> None:
  sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
  main()
