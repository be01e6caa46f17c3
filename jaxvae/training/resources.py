"""What a run uses: host memory (resident and peak), device memory in use and peak (where the
backend reports it: GPUs and TPUs do, the CPU backend does not), step time and samples/s.

Read at log steps only, from values the host already has: no device sync of its own.
"""

from __future__ import annotations

import dataclasses
import os
import resource

import jax

MB = 1 << 20


def host_rss_bytes() -> int:
  """This process's resident memory now (Linux /proc; the peak where /proc is missing)."""
  try:
    with open("/proc/self/statm", encoding="ascii") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    return host_peak_rss_bytes()


def host_peak_rss_bytes() -> int:
  """This process's peak resident memory (ru_maxrss is in KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if os.uname().sysname == "Darwin" else peak * 1024


def device_memory(devices=None) -> dict[str, int]:
  """{'bytes_in_use', 'peak_bytes_in_use'} summed over this process's devices, or {} when the
  backend keeps no statistics."""
  total: dict[str, int] = {}
  for device in jax.local_devices() if devices is None else devices:
    stats = device.memory_stats() or {}
    for key in ("bytes_in_use", "peak_bytes_in_use"):
      if key in stats:
        total[key] = total.get(key, 0) + int(stats[key])
  return total


@dataclasses.dataclass
class Monitor:
  """Turns log-step readings into `system/...` scalars and keeps what the end-of-run summary
  reports (peaks and means over this process's log windows)."""

  devices: list | None = None
  host_peak_mb: float = 0.0
  device_peak_mb: float | None = None
  windows: int = 0
  step_ms_sum: float = 0.0
  samples_per_s_sum: float = 0.0

  def sample(self, steps: int, seconds: float, batch_size: int) -> dict[str, float]:
    """The `system/...` scalars of a log window of `steps` steps that took `seconds`."""
    seconds = max(seconds, 1e-9)
    rss = host_rss_bytes() / MB
    out = {
      "system/step_ms": 1000.0 * seconds / max(steps, 1),
      "system/samples_per_s": steps * batch_size / seconds,
      "system/host_rss_mb": rss,
      # /proc's resident count and getrusage's peak are read differently: never below now.
      "system/host_peak_rss_mb": max(host_peak_rss_bytes() / MB, rss),
    }
    device = device_memory(self.devices)
    if "bytes_in_use" in device:
      out["system/device_mb_in_use"] = device["bytes_in_use"] / MB
    if "peak_bytes_in_use" in device:
      out["system/device_peak_mb"] = device["peak_bytes_in_use"] / MB
      self.device_peak_mb = max(self.device_peak_mb or 0.0, out["system/device_peak_mb"])
    self.host_peak_mb = max(self.host_peak_mb, out["system/host_peak_rss_mb"])
    self.windows += 1
    self.step_ms_sum += out["system/step_ms"]
    self.samples_per_s_sum += out["system/samples_per_s"]
    return out

  def summary(self) -> dict[str, float]:
    """Peaks and means of this process's run, for the log and `jaxvae_run.json`."""
    out = {"host_peak_rss_mb": round(max(self.host_peak_mb, host_peak_rss_bytes() / MB), 1)}
    if self.device_peak_mb is not None:
      out["device_peak_mb"] = round(self.device_peak_mb, 1)
    if self.windows:
      out["mean_step_ms"] = round(self.step_ms_sum / self.windows, 3)
      out["mean_samples_per_s"] = round(self.samples_per_s_sum / self.windows, 2)
    return out
