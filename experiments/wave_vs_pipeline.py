"""The waveform VAE beside the mel VAE + vocoder pipeline, on the same clips (issue 32).

  python experiments/wave_vs_pipeline.py --wave runs/wave --vae runs/conv --vocoder runs/vocoder \
      --out runs/wave_vs_pipeline

The clips: the validation files of the waveform VAE's run (its data settings and split), the
first `data.seconds` of each as the mel VAE's run reads them (resampled to its rate, which must
be the waveform VAE's), at most `--clips`. Neither model trained on them when both runs split
with the same seed and the mel VAE's `data.val_fraction` is at least the waveform VAE's.

Each clip is reconstructed four ways: the waveform VAE (`reconstruct`: encode, decode the
posterior means), the mel VAE's reconstruction vocoded, the mel VAE's reconstruction through
Griffin-Lim (32 iterations, the default without a vocoder), and the clip's own features vocoded
(what a perfect mel autoencoder would give through this vocoder). Scores against the originals:
mel L1 (80-band log-mel, dB), multi-resolution STFT distance and spectral convergence (STFT sizes
512, 1024, 2048, hop n / 4), and SI-SDR (dB; phase-blind paths score near or below 0). Prior
samples (as many as clips; the waveform VAE's of the clip length, the mel VAE's decoded from its
prior and vocoded): Fréchet and MMD distances to the clips in one embedding of one mel
(`evaluators.waveform.audio_distances`). Writes OUT/table.md and OUT/table.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
import jaxvae  # noqa: E402
from jaxvae.audio import decode as decode_lib  # noqa: E402
from jaxvae.data import listing  # noqa: E402
from jaxvae.evaluators import waveform  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--wave", required=True, help="a wave_vae workdir")
  p.add_argument("--vae", required=True, help="a mel VAE workdir (conv_vae, ...)")
  p.add_argument("--vocoder", required=True, help="a vocoder workdir serving the VAE's features")
  p.add_argument("--clips", type=int, default=32)
  p.add_argument("--out", required=True)
  return p.parse_args(argv)


def validation_files(config) -> list:
  d = config.data
  items = listing.list_dataset(config)
  return [it for it in items if listing.split_of(it, d.val_fraction, d.split_seed) == "validation"]


def load_clips(items, sr: int, seconds: float, limit: int) -> np.ndarray:
  """The first `seconds` of each readable file at `sr`, [N, samples]; unreadable ones skipped
  and counted on stderr."""
  clips, bad = [], 0
  for item in items:
    if len(clips) == limit:
      break
    examples, error = decode_lib.load_examples(
      item, sr=sr, mode="pad_crop", seconds=seconds, on_error="silence"
    )
    if error:
      bad += 1
      continue
    clips.append(examples[0])
  if bad:
    print(f"{bad} validation file(s) could not be read and were left out", file=sys.stderr)
  if not clips:
    raise SystemExit(f"no validation clip could be read ({len(items)} files, {bad} bad)")
  return np.stack(clips).astype(np.float32)


def compare(args) -> dict:
  wave = jaxvae.load(args.wave)
  vae = jaxvae.load(args.vae, vocoder=args.vocoder)
  griffin = jaxvae.load(args.vae)
  if wave.sr != vae.sr:
    raise SystemExit(f"the waveform VAE runs at {wave.sr} Hz and the mel VAE at {vae.sr} Hz")
  seconds = float(vae.config.data.seconds)
  clips = load_clips(validation_files(wave.config), vae.sr, seconds, args.clips)
  n = clips.shape[-1]
  recon_features = vae.reconstruct(clips, sr=vae.sr)
  made = {
    "wave_vae": wave.reconstruct(clips)[:, :n],
    "vae_vocoder": vae.to_audio(recon_features)[:, :n],
    "vae_griffin_lim": griffin.to_audio(recon_features)[:, :n],
    "own_features_vocoder": vae.to_audio(vae.features(clips, sr=vae.sr))[:, :n],
  }
  rows = {name: waveform.scores(clips, y, vae.sr) for name, y in made.items()}
  frames = -(-n // wave.hop)
  prior = {
    "wave_vae": wave.sample(len(clips), frames, seed=0)[:, :n],
    "vae_vocoder": vae.to_audio(vae.sample(len(clips), seed=0))[:, :n],
  }
  for name, y in prior.items():
    rows[name]["prior"] = waveform.audio_distances(wave.config, clips, y)
  return {
    "clips": int(len(clips)),
    "seconds": seconds,
    "sr": vae.sr,
    "wave": {"workdir": args.wave, "step": wave.step},
    "vae": {"workdir": args.vae, "step": vae.step},
    "vocoder": args.vocoder,
    "rows": rows,
  }


def table(result: dict) -> str:
  head = (
    "| path | mel L1 dB | STFT distance | spectral conv. | SI-SDR dB | prior Fréchet | prior MMD² |"
  )
  lines = [head, "|---|---|---|---|---|---|---|"]
  for name, r in result["rows"].items():
    p = r.get("prior", {})
    lines.append(
      f"| {name} | {r['mel_l1_db']:.2f} | {r['stft_distance']:.3f} | "
      f"{r['spectral_convergence']:.3f} | {r['si_sdr_db']:.1f} | "
      f"{p.get('frechet', '')} | {p.get('mmd2', '')} |"
    )
  embedding = [r["prior"]["embedding"] for r in result["rows"].values() if r.get("prior")]
  lines.append(
    f"\n{result['clips']} validation clips of {result['seconds']:g} s at {result['sr']} Hz; "
    f"prior distances in {embedding[0] if embedding else '-'}."
  )
  return "\n".join(lines)


def main(argv=None) -> int:
  args = parse_args(argv)
  result = compare(args)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "table.json"), "w") as f:
    json.dump(result, f, indent=2)
  text = table(result)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
