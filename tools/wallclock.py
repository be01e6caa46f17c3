"""Where a training command's wall time goes, measured from outside and inside the run.

    python tools/wallclock.py --config=configs/puzzle_vqvae.py:small --runs 2 --fresh-cache \
        -- --config.data.demo.clips_per_class=30
    python tools/benchmark.py --wallclock --config=configs/conv_vae.py:small --runs 2

Runs the same `python -m jaxvae.main --config=... --workdir=<new folder> --no_progress
[overrides]` `--runs` times, one after the other, each in a fresh workdir but sharing the
feature store and the compilation cache (`--fresh-cache`: an empty cache folder for the
first run, so run 1 compiles everything and run 2 shows what the cache saves). Each run's
wall time is split into

  start-up     process start, imports, config (launch -> the trainer's first line)
  data         the feature store: built, or opened and split
  setup        model, optimizer and state
  compile      JAX tracing, lowering and XLA compilation (or persistent-cache loads)
  train_steps  the steps, waiting for the device included
  evaluation   validation at epoch ends
  checkpoints  restore, saves (asynchronous: the part the loop waits for), close
  reports      the periodic report (device work and, on the CPU, the drawing)
  logging      TensorBoard, metrics.jsonl, the end-of-run curves
  shutdown     after the run file is written until the process exits

from the run's own `timing` record (`jaxvae_run.json`, `jaxvae/training/timing.py`) and the
clock around the process. `after_first_epoch_train_share` is the share of train steps in the
wall time of epochs 2..N (the issue's "epochs that are mostly training" goal).
`--json PATH` writes the records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from jaxvae.training import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The run's own phases (jaxvae/training/timing.py) with compilation after set-up.
PHASES = (*timing.PHASES[:2], "compile", *timing.PHASES[2:])


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", required=True, help="configs/<name>.py[:preset]")
  p.add_argument("--runs", type=int, default=2, help="runs of the same command, in order")
  p.add_argument("--fresh-cache", action="store_true", help="start from an empty XLA cache")
  p.add_argument("--workdir", default="", help="keep the runs' workdirs here (default: tmp)")
  p.add_argument("--json", default="", help="write the records here")
  p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
  p.add_argument("overrides", nargs="*", help="--config.a.b=value ... (after --)")
  return p.parse_args(argv)


def run_once(args, workdir: str, cache: str | None) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "jaxvae.main",
    f"--config={args.config}",
    f"--workdir={workdir}",
    "--no_progress",
    *args.overrides,
  ]
  if cache:
    cmd.append(f"--config.compile_cache_dir={cache}")
  launch = time.time()
  proc = subprocess.run(
    cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout, check=False
  )
  end = time.time()
  if proc.returncode != 0:
    raise SystemExit(f"the run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with open(os.path.join(workdir, "jaxvae_run.json"), encoding="utf-8") as f:
    timing = json.load(f)["timing"]
  record = {"wall_s": round(end - launch, 3)}
  record["startup_s"] = round(timing["started_at"] - launch, 3)
  for phase in PHASES:
    record[f"{phase}_s"] = timing[f"{phase}_s"]
  record["shutdown_s"] = round(end - timing["finished_at"], 3)
  for key in ("startup", *PHASES, "shutdown"):
    record[f"{key}_share"] = round(record[f"{key}_s"] / record["wall_s"], 4)
  record |= {k: timing[k] for k in ("compiles", "cache_hits", "cache_misses")}
  later = timing["epochs"][1:]
  if later:
    total = sum(sum(e.values()) for e in later)
    record["after_first_epoch_s"] = round(total, 3)
    record["after_first_epoch_train_share"] = round(sum(e["train_steps"] for e in later) / total, 4)
  record["epochs"] = timing["epochs"]
  return record


def table(records: list[dict]) -> str:
  head = "| phase | " + " | ".join(f"run {i + 1}" for i in range(len(records))) + " |"
  lines = [head, "|---" * (len(records) + 1) + "|"]
  for key in ("startup", *PHASES, "shutdown"):
    cells = [f"{r[key + '_s']:.2f} s ({100 * r[key + '_share']:.0f} %)" for r in records]
    lines.append(f"| {key} | " + " | ".join(cells) + " |")
  lines.append("| **wall** | " + " | ".join(f"**{r['wall_s']:.2f} s**" for r in records) + " |")
  lines.append(
    "| compiles (cache hits) | "
    + " | ".join(f"{r['compiles']} ({r['cache_hits']})" for r in records)
    + " |"
  )
  if all("after_first_epoch_train_share" in r for r in records):
    lines.append(
      "| train steps' share after epoch 1 | "
      + " | ".join(f"{100 * r['after_first_epoch_train_share']:.0f} %" for r in records)
      + " |"
    )
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  root = args.workdir or tempfile.mkdtemp(prefix="jaxvae_wallclock_")
  cache = os.path.join(root, "xla_cache") if args.fresh_cache else None
  if cache:
    shutil.rmtree(cache, ignore_errors=True)
  records = []
  for i in range(args.runs):
    workdir = os.path.join(root, f"run{i + 1}")
    shutil.rmtree(workdir, ignore_errors=True)
    records.append(run_once(args, workdir, cache))
  print(f"{args.config} {' '.join(args.overrides)}")
  print(table(records))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)
  if not args.workdir:
    shutil.rmtree(root, ignore_errors=True)
  return records


if __name__ == "__main__":
  main()
