#!/usr/bin/env bash
# Every GPU figure BUILD_NOTES.md asks for, in one command (about 10 minutes on one H100):
# JAX vs PyTorch eager for the three reference models, the puzzle VQ-VAE's seed-004 run
# extrapolated from its step rate, transformer tokens/s at seq 512 and 2048, MFU at the
# high_quality preset in bfloat16, and sampling tokens/s. Records go to ${OUT:-/tmp/gpu_bench}.
#   bash tools/gpu_benchmarks.sh            # needs jax[cuda], torch (the [bench] extra)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_bench}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" || true
b() { name=$1; shift; python tools/benchmark.py --json "$out/$name.json" "$@" > "$out/$name.txt" 2>&1 \
        || echo "benchmark $name failed (see $out/$name.txt)"; tail -n 12 "$out/$name.txt"; }
b puzzle --models puzzle_vqvae --batch-size 64 --steps 50 --repeats 3
b puzzle_matmul --models puzzle_vqvae --batch-size 64 --steps 50 --repeats 3 --frameworks jax \
  --override model.conv_transpose=matmul
b conv_seed --models conv_vae --batch-size 4 --steps 20 --repeats 3
b transformer_512 --models music_transformer --batch-size 8 --steps 30 --repeats 3
b transformer_512_bf16 --models music_transformer --batch-size 8 --steps 30 --repeats 3 \
  --dtype bfloat16 --frameworks jax
b transformer_2048 --models music_transformer --preset speed_test --batch-size 8 --steps 20 \
  --dtype bfloat16 --frameworks jax --generate-tokens 2047
b transformer_hq --models music_transformer --preset high_quality --batch-size 32 --steps 20 \
  --dtype bfloat16 --frameworks jax --generate-tokens 1023 --profile
b all_small --models all --preset small --frameworks jax --steps 20
