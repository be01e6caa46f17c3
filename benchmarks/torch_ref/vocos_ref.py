"""The PyTorch reference of the vocoder benchmark: the `vocos` package's generator (its
VocosBackbone + ISTFTHead, untrained: timing needs no weights) of a given size, timed on mel
batches. Run by `tools/bench_vocoder.py`; prints one JSON line: {batch: median seconds}.

`vocos` (0.1.0) imports torchaudio in its package `__init__` (the pretrained loader and the
feature extractor) and in `heads.py` (two mel-scale helpers of the IMDCT head); torchaudio is
published up to 2.11 while the torch here is 2.13. Where torchaudio is missing, the `vocos`
package is entered without its `__init__` and those two helpers get stand-ins that raise if
called: VocosBackbone and ISTFTHead, the parts timed, use neither (vocos itself: `pip install
--target DIR --no-deps vocos`, then `--vocos-path DIR`).

  python -m benchmarks.torch_ref.vocos_ref --n-mels 64 --dim 192 --intermediate 576 \\
      --layers 6 --n-fft 2048 --hop 512 --frames 130 --batches 1,16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
  p = argparse.ArgumentParser()
  for name in ("n-mels", "dim", "intermediate", "layers", "n-fft", "hop", "frames", "threads"):
    p.add_argument(f"--{name}", type=int, required=True)
  p.add_argument("--batches", default="1,16")
  p.add_argument("--repeats", type=int, default=10)
  args = p.parse_args()
  import torch

  _enter_vocos_without_torchaudio()
  from vocos.heads import ISTFTHead
  from vocos.models import VocosBackbone

  torch.set_num_threads(args.threads)
  backbone = VocosBackbone(
    input_channels=args.n_mels,
    dim=args.dim,
    intermediate_dim=args.intermediate,
    num_layers=args.layers,
  ).eval()
  head = ISTFTHead(dim=args.dim, n_fft=args.n_fft, hop_length=args.hop, padding="center").eval()
  params = sum(p.numel() for m in (backbone, head) for p in m.parameters())
  out = {"parameters": params, "torch": torch.__version__, "seconds": {}}
  with torch.inference_mode():
    for batch in (int(b) for b in args.batches.split(",")):
      mel = torch.randn(batch, args.n_mels, args.frames)
      head(backbone(mel))  # warm-up
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        head(backbone(mel))
        times.append(time.perf_counter() - start)
      out["seconds"][str(batch)] = sorted(times)[len(times) // 2]
  print(json.dumps(out))


def _enter_vocos_without_torchaudio() -> None:
  """See the module doc: only when torchaudio cannot be imported."""
  import importlib.util
  import sys
  import types

  if importlib.util.find_spec("torchaudio") is not None:
    return
  spec = importlib.util.find_spec("vocos")
  if spec is None:
    raise SystemExit("vocos is not installed (pip install --target DIR --no-deps vocos)")
  package = types.ModuleType("vocos")
  package.__path__ = list(spec.submodule_search_locations)
  sys.modules["vocos"] = package

  def unavailable(*args, **kwargs):
    raise RuntimeError("torchaudio is not installed")

  for name in ("torchaudio", "torchaudio.functional", "torchaudio.functional.functional"):
    sys.modules[name] = types.ModuleType(name)
  sys.modules["torchaudio.functional.functional"]._hz_to_mel = unavailable
  sys.modules["torchaudio.functional.functional"]._mel_to_hz = unavailable


if __name__ == "__main__":
  main()
