#!/usr/bin/env bash
# Every GPU figure BUILD_NOTES.md asks for, in one command, most important first, each under
# its own time limit so one slow item cannot take the others' time (about 9 minutes on one
# H100/H200): the wall-clock split of a training command for the seed-004 config on a few
# hundred clips and for conv_vae:small (tools/wallclock.py, cold and warm compilation cache),
# JAX vs PyTorch eager for the puzzle VQ-VAE (with the seed-004 run extrapolated from its step
# rate), transformer tokens/s at seq 512, MFU at the high_quality preset in bfloat16 with
# sampling tokens/s, full causal attention dense / prefix / blockwise / dot_product_attention,
# the seed-size conv VAE, and the vocoder's generator (real time at batch 1 and 16). Records go to ${OUT:-/tmp/gpu_bench}.
#   bash tools/gpu_benchmarks.sh            # needs jax[cuda], torch (the [bench] extra)
#   QUICK=1 bash tools/gpu_benchmarks.sh    # the same items at smoke size (checks the script)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_bench}
mkdir -p "$out"
quick=${QUICK:-0}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
"$py" -c "import jax; print(jax.__version__, jax.devices())" >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
run() {  # run NAME SECONDS command...: output to $out/NAME.txt, its tail on stdout
  name=$1; limit=$2; shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - start )) s (limit $limit s)"
  tail -n 18 "$out/$name.txt"
}
b() { name=$1; limit=$2; shift 2; run "$name" "$limit" "$py" tools/benchmark.py --json "$out/$name.json" "$@"; }
wc_seed=(--config.data.layout=demo --config.data.demo.clips_per_class=30
         --config.data.cache_dir=/tmp/jaxvae_cache --config.train.report_audio=False)
steps=50; small=""
if [ "$quick" = 1 ]; then
  wc_seed+=(--config.train.epochs=2 --config.data.demo.clips_per_class=4 --config.train.batch_size=8)
  steps=3; small="--preset small"
fi
run wallclock_seed004 200 "$py" tools/wallclock.py --config=configs/puzzle_vqvae.py --runs 2 \
  --fresh-cache --json "$out/wallclock_seed004.json" -- "${wc_seed[@]}"
b puzzle 80 --models puzzle_vqvae --batch-size 64 --steps $steps --repeats 3
b transformer_512 90 --models music_transformer --batch-size 8 --steps 30 --repeats 3 $small
b transformer_hq 90 --models music_transformer --preset high_quality --batch-size 32 --steps 20 \
  --dtype bfloat16 --frameworks jax --generate-tokens 1023
# Full causal attention four ways (model.attention_impl), seq 512, bfloat16: dense masked
# scores, query blocks against their key prefix (the configs' default), the blockwise online
# softmax, jax.nn.dot_product_attention (cuDNN's fused kernel).
for impl in dense prefix blockwise dpa; do
  b attention_$impl 60 --models music_transformer --batch-size 16 --steps $steps --repeats 2 \
    --dtype bfloat16 --frameworks jax --override model.attention_impl=$impl $small
done
run wallclock_conv_small 100 "$py" tools/wallclock.py --config=configs/conv_vae.py:small \
  --runs 2 --fresh-cache --json "$out/wallclock_conv_small.json" -- \
  --config.data.cache_dir=/tmp/jaxvae_cache --config.train.report_audio=False
b conv_seed 60 --models conv_vae --batch-size 4 --steps 20 --repeats 3 $small
# The vocoder's generator at the full (13.5 M, Vocos) size: real-time factors at batch 1 and 16,
# beside the vocos package's when VOCOS_PATH names its install folder.
vpreset=""; [ "$quick" = 1 ] && vpreset="small"
b vocoder 60 --vocoder --preset "$vpreset" --repeats 10 ${VOCOS_PATH:+--vocos-path "$VOCOS_PATH"}
exit 0
