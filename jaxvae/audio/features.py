"""Audio features in JAX with librosa's names, defaults and numbers.

STFT, mel filterbank, mel power spectrogram, power/amplitude to dB and MFCC, jit-compiled and
batched so feature extraction runs on the accelerator (or on all CPU cores) instead of one clip
at a time in numpy. librosa stays the reference: the tests compare every function here with its
librosa counterpart on real and synthetic audio.

Defaults are librosa's: sr 22050, n_fft 2048, hop 512, n_mels 128, periodic Hann window, centered
frames with constant (zero) padding, slaney mel scale and slaney area normalization, dB with
ref 1.0, amin 1e-10, top_db 80, MFCC as an orthonormal DCT-II of the dB mel power.

Shapes: a waveform `[..., samples]` gives `[..., n_mels, frames]`; every leading axis is a batch
axis. `frames = 1 + samples // hop_length` when `center=True`.

Precision. Inputs and outputs are float32. The windowing and FFT run in float64 by default
(`fft_dtype='float64'`, inside a scoped `jax.enable_x64`), because that is what librosa does and
because a float32 FFT has a rounding floor about 140 dB below each frame's energy: cells 80 dB
under the peak then differ from librosa by ~1e-3 dB (float64: ~1e-5 dB). `fft_dtype='float32'`
is 1.5-2x faster on CPU (tools/bench_features.py) and still within ~1e-6 relative (Frobenius)
of librosa's mel power; use it on TPUs (no float64 FFT). Gradients through either path are the
float32 path's (a custom VJP), so the features can sit inside a differentiated loss. The
filterbank and DCT matrices are built in numpy float64 (cast to float32) and cached per
parameter set; their products ask for `HIGHEST` precision so accelerators that would use
TF32/bf16 passes for float32 matmuls (A100, H100) keep the agreement.

Going back to audio (Griffin-Lim) and writing WAV files are `jaxvae.audio.synthesis`.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Sample rate, FFT size, hop, mel bands: librosa.feature.melspectrogram's defaults.
SR = 22050
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128

_HIGHEST = jax.lax.Precision.HIGHEST

# Dtype of the windowed frames and the FFT (see the module docstring).
FFT_DTYPE = "float64"
FFT_DTYPES = ("float64", "float32")

# On CPU the mel path transforms about this many bytes of frames at a time (`_chunk_frames`).
CPU_CHUNK_BYTES = 4 << 20

# Slaney's auditory-toolbox mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_SLANEY_F_SP = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0

ArrayLike = np.ndarray | jax.Array


# ----------------------------------------------------------------------------------------------
# Mel scale and filterbank (numpy, float64)
# ----------------------------------------------------------------------------------------------


def hz_to_mel(frequencies: Any, htk: bool = False) -> np.ndarray:
  """Hz -> mels (slaney by default, HTK with `htk=True`), as librosa.hz_to_mel."""
  f = np.asarray(frequencies, dtype=np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + f / 700.0)
  linear = f / _SLANEY_F_SP
  # np.maximum keeps log() away from zero/negative inputs that the linear branch handles.
  log_part = (
    _SLANEY_MIN_LOG_MEL
    + np.log(np.maximum(f, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
  )
  return np.where(f >= _SLANEY_MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mels: Any, htk: bool = False) -> np.ndarray:
  """Mels -> Hz, the inverse of `hz_to_mel`."""
  m = np.asarray(mels, dtype=np.float64)
  if htk:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  linear = _SLANEY_F_SP * m
  log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
  return np.where(m >= _SLANEY_MIN_LOG_MEL, log_part, linear)


def mel_frequencies(
  n_mels: int = N_MELS, fmin: float = 0.0, fmax: float = 11025.0, htk: bool = False
) -> np.ndarray:
  """`n_mels` frequencies (Hz) evenly spaced on the mel scale from `fmin` to `fmax`."""
  mels = np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels)
  return mel_to_hz(mels, htk)


def fft_frequencies(sr: float = SR, n_fft: int = N_FFT) -> np.ndarray:
  """Centre frequencies (Hz) of the `1 + n_fft // 2` rfft bins."""
  return np.fft.rfftfreq(n=n_fft, d=1.0 / sr)


def mel_filterbank(
  sr: float = SR,
  n_fft: int = N_FFT,
  n_mels: int = N_MELS,
  fmin: float = 0.0,
  fmax: float | None = None,
  htk: bool = False,
  norm: str | float | None = "slaney",
  dtype: Any = np.float32,
) -> np.ndarray:
  """Triangular mel filters `[n_mels, 1 + n_fft // 2]`, equal to librosa.filters.mel.

  Args:
    sr, n_fft: sample rate and FFT size of the spectrogram the filters apply to.
    n_mels, fmin, fmax, htk: number of bands, band edges in Hz (`fmax=None` is `sr / 2`), and
      HTK instead of slaney mel scale.
    norm: 'slaney' divides each triangle by its width in Hz (constant energy per band); a number
      p scales each filter to unit l_p norm; None leaves peaks at 1.
    dtype: dtype of the returned matrix (the arithmetic is float64).
  """
  fmax = sr / 2.0 if fmax is None else float(fmax)
  edges = mel_frequencies(n_mels + 2, fmin, fmax, htk)
  widths = np.diff(edges)
  # ramps[i, k]: distance in Hz from edge i to FFT bin k.
  ramps = edges[:, None] - fft_frequencies(sr, n_fft)[None, :]
  rising = -ramps[:-2] / widths[:-1, None]
  falling = ramps[2:] / widths[1:, None]
  # Rounding the triangles to `dtype` before normalizing (in float64) reproduces librosa's
  # float32 matrix bit for bit, not just to 1 ulp.
  weights = np.maximum(0.0, np.minimum(rising, falling)).astype(dtype)
  weights = _normalize_filters(weights.astype(np.float64), edges, norm)
  return weights.astype(dtype)


def _normalize_filters(
  weights: np.ndarray, edges: np.ndarray, norm: str | float | None
) -> np.ndarray:
  """Applies librosa's filter normalizations (slaney area, l_p, or none)."""
  if norm is None:
    return weights
  if norm == "slaney":
    n_mels = weights.shape[0]
    return weights * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
  if isinstance(norm, str):
    raise ValueError(f"mel norm must be 'slaney', a number or None, got {norm!r}")
  length = np.linalg.norm(weights, ord=norm, axis=-1, keepdims=True)
  # Empty filters (possible with many bands and small n_fft) stay zero, as in librosa.
  tiny = np.finfo(weights.dtype).tiny
  return np.where(length > tiny, weights / np.maximum(length, tiny), weights)


@functools.lru_cache(maxsize=32)
def _cached_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm) -> np.ndarray:
  """The filterbank, built once per parameter set.

  Cached as numpy, not as a jax array: a jnp array first made while some caller traces a jit
  would be a tracer, and caching it would leak it into later calls.
  """
  basis = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
  basis.flags.writeable = False
  return basis


# ----------------------------------------------------------------------------------------------
# Windows and framing
# ----------------------------------------------------------------------------------------------


def get_window(
  window: Any = "hann", win_length: int = N_FFT, n_fft: int | None = None
) -> np.ndarray:
  """Analysis window of `win_length` samples, zero-padded (centred) to `n_fft`, as librosa.

  `window` is a scipy.signal.get_window spec ('hann', ('kaiser', 4.0), ...) evaluated periodic
  (`fftbins=True`, librosa's choice), a callable `f(win_length)`, or an array of `win_length`
  values.
  """
  n_fft = win_length if n_fft is None else n_fft
  if win_length > n_fft:
    raise ValueError(f"win_length={win_length} must be <= n_fft={n_fft}")
  if callable(window):
    w = np.asarray(window(win_length), dtype=np.float64)
  elif isinstance(window, (str, tuple, float, int)):
    import scipy.signal  # pylint: disable=g-import-not-at-top  (scipy is a librosa dependency)

    w = scipy.signal.get_window(window, win_length, fftbins=True)
  else:
    w = np.asarray(window, dtype=np.float64)
  if w.shape != (win_length,):
    raise ValueError(f"window has shape {w.shape}, expected ({win_length},)")
  left = (n_fft - win_length) // 2
  return np.pad(w, (left, n_fft - win_length - left))


@functools.lru_cache(maxsize=32)
def _cached_window(window, win_length, n_fft) -> tuple[np.ndarray, np.ndarray]:
  return _split_window(get_window(window, win_length, n_fft))


def _split_window(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float64 window -> float32 (hi, lo) with hi + lo == w to ~1e-14.

  Only float32 arrays cross into traced code, so the float64 path takes no float64 inputs (and
  its custom gradient returns no float64 cotangents). In float64, hi + lo restores the window
  librosa uses; in float32 it rounds back to hi.
  """
  hi = w.astype(np.float32)
  lo = (w - hi).astype(np.float32)
  hi.flags.writeable = lo.flags.writeable = False  # cached and shared between calls
  return hi, lo


def _window_pair(window: Any, win_length: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
  """The window as a (hi, lo) float32 pair; cached when the spec is hashable (str, tuple)."""
  try:
    return _cached_window(window, win_length, n_fft)
  except TypeError:  # unhashable spec (an array): build it each call, it is small.
    return _split_window(get_window(window, win_length, n_fft))


def num_frames(
  n_samples: int, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, center: bool = True
) -> int:
  """Number of STFT frames for a signal of `n_samples`, as librosa counts them."""
  padded = n_samples + 2 * (n_fft // 2) if center else n_samples
  if padded < n_fft:
    raise ValueError(
      f"signal of {n_samples} samples is shorter than n_fft={n_fft} "
      "(use center=True or a smaller n_fft)"
    )
  return 1 + (padded - n_fft) // hop_length


def _pad_signal(y: jax.Array, n_fft: int, center: bool, pad_mode: str) -> jax.Array:
  if not center:
    return y
  return jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode=pad_mode)


def _frames(y: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
  """Overlapping frames `[..., frames, n_fft]` of an already padded `y [..., samples]`.

  A gather with a constant index matrix: on XLA:CPU it measured faster than building frames
  from hop-aligned blocks with slices + concatenate/stack, and it handles any hop.
  """
  n = num_frames(y.shape[-1], n_fft, hop_length, center=False)
  # int32 indices: under x64 an int64 index trips jnp's int32 bounds arithmetic.
  index = (np.arange(n)[:, None] * hop_length + np.arange(n_fft)[None, :]).astype(np.int32)
  return y[..., index]


def _windowed_rfft(frames, w_hi, w_lo, fft_dtype):
  """rfft of `frames * window` over the last axis, computed in `fft_dtype`."""
  window = w_hi.astype(fft_dtype) + w_lo.astype(fft_dtype)
  return jnp.fft.rfft(frames.astype(fft_dtype) * window, axis=-1)


def _chunk_frames(n_fft: int, fft_dtype: str) -> int | None:
  """Frames per sequential chunk of the mel path, or None for one pass over the whole batch.

  On CPU the frames of a batch (4x the audio at hop n_fft/4, in float64) overflow the caches
  between the gather, the FFT and the power; chunks of ~4 MiB of frames measured 2-2.5x faster
  on a 2-core EPYC (2 MiB L2 per core). Accelerators want the whole batch in one pass.
  """
  if jax.default_backend() != "cpu":
    return None
  frames = CPU_CHUNK_BYTES // (n_fft * np.dtype(fft_dtype).itemsize)
  return max(16, 1 << (max(frames, 1).bit_length() - 1))  # a power of two


# ----------------------------------------------------------------------------------------------
# STFT and mel power (jitted)
# ----------------------------------------------------------------------------------------------

_SIGNAL_STATICS = ("n_fft", "hop_length", "center", "pad_mode", "fft_dtype")


@functools.partial(jax.jit, static_argnames=_SIGNAL_STATICS)
def _stft(y, w_hi, w_lo, *, n_fft, hop_length, center, pad_mode, fft_dtype):
  frames = _frames(_pad_signal(y, n_fft, center, pad_mode), n_fft, hop_length)
  spec = _windowed_rfft(frames, w_hi, w_lo, fft_dtype)
  return jnp.swapaxes(spec, -1, -2).astype(jnp.complex64)


@jax.custom_jvp
def magnitude_sqrt(energy: jax.Array) -> jax.Array:
  """sqrt(energy) for |spec| = sqrt(re^2 + im^2), whose derivative stays finite where a bin is
  exactly 0 (silence: a waveform model that learns to output exact zeros would otherwise get an
  infinite derivative there, times 0 from a floored log: NaN gradients). Values are sqrt's."""
  return jnp.sqrt(energy)


@magnitude_sqrt.defjvp
def _magnitude_sqrt_jvp(primals, tangents):
  (energy,), (t,) = primals, tangents
  root = jnp.sqrt(energy)
  return root, t / (2.0 * jnp.maximum(root, 1e-12))


def _power(spec: jax.Array, power: float) -> jax.Array:
  """|spec| ** power; re^2 + im^2 avoids the sqrt-then-square round trip of abs() for power 2."""
  energy = jnp.square(spec.real) + jnp.square(spec.imag)
  if power == 2.0:
    return energy
  if power == 1.0:
    return magnitude_sqrt(energy)
  return energy ** (power / 2.0)


def _mel_of_frames(frames, w_hi, w_lo, basis, fft_dtype, power):
  """`[..., frames, n_fft]` -> mel `[..., frames, n_mels]` (float32)."""
  spec = _windowed_rfft(frames, w_hi, w_lo, fft_dtype)
  # Rounding the (non-negative) power to float32 costs 6e-8 relative, and the product with the
  # non-negative filters keeps that order: only the FFT needs the wide type.
  energy = _power(spec, power).astype(jnp.float32)
  return jnp.matmul(energy, basis.T, precision=_HIGHEST)


def _mel_in_chunks(y, w_hi, w_lo, basis, n_fft, hop_length, fft_dtype, power, chunk):
  """Like `_mel_of_frames(_frames(y))`, gathering and transforming `chunk` frames at a time.

  All clips' frames are numbered in one sequence, so chunks stay full whatever the clip length.
  """
  rows = y.reshape(-1, y.shape[-1])
  n_frames = num_frames(y.shape[-1], n_fft, hop_length, center=False)
  total = rows.shape[0] * n_frames
  chunk = -(-total // -(-total // chunk))  # same number of chunks, the last one nearly full
  offsets = jnp.arange(n_fft, dtype=jnp.int32)

  def one_chunk(first):
    frame = jnp.minimum(first + jnp.arange(chunk, dtype=jnp.int32), total - 1)
    clip, start = frame // n_frames, (frame % n_frames) * hop_length
    frames = rows[clip[:, None], start[:, None] + offsets[None, :]]
    return _mel_of_frames(frames, w_hi, w_lo, basis, fft_dtype, power)

  firsts = jnp.arange(0, total, chunk, dtype=jnp.int32)
  mel = jax.lax.map(one_chunk, firsts).reshape(-1, basis.shape[0])[:total]
  return mel.reshape(y.shape[:-1] + (n_frames, basis.shape[0]))


@functools.partial(jax.jit, static_argnames=_SIGNAL_STATICS + ("power", "chunk"))
def _mel_power(
  y, w_hi, w_lo, basis, *, n_fft, hop_length, center, pad_mode, fft_dtype, power, chunk
):
  y = _pad_signal(y, n_fft, center, pad_mode)
  n_frames = num_frames(y.shape[-1], n_fft, hop_length, center=False)
  if chunk is None or np.prod(y.shape[:-1], dtype=np.int64) * n_frames <= chunk:
    mel = _mel_of_frames(_frames(y, n_fft, hop_length), w_hi, w_lo, basis, fft_dtype, power)
  else:
    mel = _mel_in_chunks(y, w_hi, w_lo, basis, n_fft, hop_length, fft_dtype, power, chunk)
  return jnp.swapaxes(mel, -1, -2)


def _wide_fft_impl(fn, statics, *args):
  # float64 inside jit needs x64 on while tracing; the context is scoped to this call.
  with jax.enable_x64(True):
    return fn(*args, fft_dtype="float64", **dict(statics))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _wide_fft(fn, statics, *args):
  """`fn(*args)` with a float64 FFT, differentiated as the float32 path.

  Differentiating through the scoped x64 context fails (float32 cotangents meet float64
  primals), and a gradient has no use for the extra digits.
  """
  return _wide_fft_impl(fn, statics, *args)


def _wide_fft_fwd(fn, statics, *args):
  return _wide_fft_impl(fn, statics, *args), args


def _wide_fft_bwd(fn, statics, args, cotangent):
  narrow = functools.partial(fn, fft_dtype="float32", **dict(statics))
  return jax.vjp(narrow, *args)[1](cotangent)


_wide_fft.defvjp(_wide_fft_fwd, _wide_fft_bwd)


def _signal_path(fn, fft_dtype: str, statics: dict, *args):
  """Runs a jitted signal-path function with its FFT in `fft_dtype`."""
  if fft_dtype == "float32":
    return fn(*args, fft_dtype="float32", **statics)
  if fft_dtype == "float64":
    return _wide_fft(fn, tuple(sorted(statics.items())), *args)
  raise ValueError(f"fft_dtype must be one of {FFT_DTYPES}, got {fft_dtype!r}")


def _as_signal(y: ArrayLike) -> jax.Array:
  y = jnp.asarray(y, dtype=jnp.float32)
  if y.ndim < 1:
    raise ValueError("audio must have a samples axis: expected shape [..., samples]")
  return y


def stft(
  y: ArrayLike,
  n_fft: int = N_FFT,
  hop_length: int | None = None,
  win_length: int | None = None,
  window: Any = "hann",
  center: bool = True,
  pad_mode: str = "constant",
  fft_dtype: str = FFT_DTYPE,
) -> jax.Array:
  """Short-time Fourier transform, as librosa.stft.

  Args:
    y: float waveform `[..., samples]` (numpy or jax).
    n_fft: FFT size; `win_length` (default `n_fft`) samples are windowed, zero-padded to `n_fft`.
    hop_length: frame step; default `win_length // 4` like librosa (512 for the defaults).
    window: see `get_window`.
    center: pad `n_fft // 2` samples on both sides so frame t is centred on sample t * hop.
    pad_mode: `jnp.pad` mode for that padding ('constant' = zeros, librosa's default).
    fft_dtype: 'float64' (librosa's numbers) or 'float32' (faster); see the module docstring.

  Returns:
    complex64 `[..., 1 + n_fft // 2, frames]`.
  """
  win_length = n_fft if win_length is None else win_length
  hop_length = win_length // 4 if hop_length is None else hop_length
  y = _as_signal(y)
  num_frames(y.shape[-1], n_fft, hop_length, center)  # validates the length early
  statics = dict(n_fft=n_fft, hop_length=hop_length, center=center, pad_mode=pad_mode)
  return _signal_path(_stft, fft_dtype, statics, y, *_window_pair(window, win_length, n_fft))


def mel_spectrogram(
  y: ArrayLike,
  sr: float = SR,
  n_fft: int = N_FFT,
  hop_length: int = HOP_LENGTH,
  win_length: int | None = None,
  window: Any = "hann",
  center: bool = True,
  pad_mode: str = "constant",
  power: float = 2.0,
  n_mels: int = N_MELS,
  fmin: float = 0.0,
  fmax: float | None = None,
  htk: bool = False,
  norm: str | float | None = "slaney",
  fft_dtype: str = FFT_DTYPE,
) -> jax.Array:
  """Mel spectrogram, as librosa.feature.melspectrogram(y=y, ...).

  Args:
    y: float waveform `[..., samples]`; leading axes are batch axes.
    sr, n_fft, hop_length, win_length, window, center, pad_mode: as in `stft`.
    power: exponent of the magnitude (2 = power, 1 = magnitude).
    n_mels, fmin, fmax, htk, norm: as in `mel_filterbank`.
    fft_dtype: as in `stft`.

  Returns:
    float32 `[..., n_mels, frames]`, frames = `num_frames(samples, n_fft, hop_length, center)`.
  """
  win_length = n_fft if win_length is None else win_length
  y = _as_signal(y)
  num_frames(y.shape[-1], n_fft, hop_length, center)
  basis = _cached_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
  statics = dict(
    n_fft=n_fft,
    hop_length=hop_length,
    center=center,
    pad_mode=pad_mode,
    power=float(power),
    chunk=_chunk_frames(n_fft, fft_dtype),
  )
  return _signal_path(
    _mel_power, fft_dtype, statics, y, *_window_pair(window, win_length, n_fft), basis
  )


def istft(
  stft_matrix: ArrayLike,
  hop_length: int,
  n_fft: int | None = None,
  window: Any = "hann",
  center: bool = True,
  length: int | None = None,
) -> jax.Array:
  """Inverse STFT, as librosa.istft: windowed inverse FFTs overlap-added and divided by the
  summed squared window (jittable and differentiable: the vocoder's output head).

  Args:
    stft_matrix: complex `[..., 1 + n_fft // 2, frames]`.
    hop_length: frame step; `n_fft` must be a multiple of it (the overlap-add sums
      `n_fft // hop_length` hop-long blocks per frame).
    n_fft: default `2 * (bins - 1)`.
    window, center: as in `stft` (`center`: the first `n_fft // 2` samples are dropped, so
      frame t is centred on sample t * hop).
    length: samples out (cut or zero-padded); default `hop * (frames - 1)` when centred.

  Returns:
    float32 `[..., samples]`.
  """
  S = jnp.asarray(stft_matrix)
  bins, n = S.shape[-2], S.shape[-1]
  n_fft = 2 * (bins - 1) if n_fft is None else n_fft
  if n_fft % hop_length:
    raise ValueError(f"istft needs n_fft ({n_fft}) to be a multiple of hop_length ({hop_length})")
  k = n_fft // hop_length
  w = get_window(window, n_fft, n_fft).astype(np.float32)
  frames = jnp.fft.irfft(jnp.swapaxes(S, -1, -2), n=n_fft, axis=-1).astype(jnp.float32) * w
  blocks = frames.reshape(*frames.shape[:-1], k, hop_length)  # [..., frames, k, hop]
  out = jnp.zeros((*frames.shape[:-2], n + k - 1, hop_length), jnp.float32)
  for j in range(k):  # block j of frame t lands on output block t + j
    out = out.at[..., j : j + n, :].add(blocks[..., j, :])
  envelope = np.zeros((n + k - 1, hop_length), np.float64)
  for j in range(k):
    envelope[j : j + n] += np.square(w.astype(np.float64)).reshape(k, hop_length)[j]
  envelope = np.where(envelope > 1e-11, envelope, 1.0).astype(np.float32)
  y = (out / envelope).reshape(*out.shape[:-2], -1)
  start = n_fft // 2 if center else 0
  if length is None:
    length = hop_length * (n - 1) if center else y.shape[-1]
  y = y[..., start : start + length]
  if y.shape[-1] < length:
    y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])
  return y


# ----------------------------------------------------------------------------------------------
# Decibels
# ----------------------------------------------------------------------------------------------

# numpy reductions a user may pass as `ref` (librosa's docs use np.max), mapped to jnp so they
# run per example and under jit.
_REDUCTIONS = {
  np.max: jnp.max,
  np.amax: jnp.max,
  np.min: jnp.min,
  np.amin: jnp.min,
  np.mean: jnp.mean,
  np.median: jnp.median,
  jnp.max: jnp.max,
  jnp.amax: jnp.max,
  jnp.min: jnp.min,
  jnp.mean: jnp.mean,
  jnp.median: jnp.median,
}


def _example_axes(x: jax.Array) -> tuple[int, ...]:
  """The axes of one example: the last two (bands, frames); all axes when ndim < 2."""
  return tuple(range(max(x.ndim - 2, 0), x.ndim))


def _reference_value(x: jax.Array, ref: float | ArrayLike | Callable) -> jax.Array:
  """`ref` as an array that broadcasts against `x`; a callable is applied per example."""
  if not callable(ref):
    return jnp.abs(jnp.asarray(ref, dtype=x.dtype))
  reduce = _REDUCTIONS.get(ref)
  if reduce is not None:
    return reduce(x, axis=_example_axes(x), keepdims=True)
  if x.ndim <= 2:
    return jnp.asarray(ref(x), dtype=x.dtype)
  # Any other callable must be jax-traceable to be mapped over the batch.
  flat = x.reshape((-1,) + x.shape[-2:])
  return jax.vmap(ref)(flat).reshape(x.shape[:-2] + (1, 1)).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("top_db",))
def _db(power, ref_power, amin, *, top_db):
  db = 10.0 * jnp.log10(jnp.maximum(amin, power))
  db = db - 10.0 * jnp.log10(jnp.maximum(amin, ref_power))
  if top_db is not None:
    floor = jnp.max(db, axis=_example_axes(db), keepdims=True) - top_db
    db = jnp.maximum(db, floor)
  return db


def _check_db_args(amin: float, top_db: float | None) -> None:
  if amin <= 0:
    raise ValueError(f"amin must be strictly positive, got {amin}")
  if top_db is not None and top_db < 0:
    raise ValueError(f"top_db must be non-negative, got {top_db}")


def power_to_db(
  S: ArrayLike,
  ref: float | ArrayLike | Callable = 1.0,
  amin: float = 1e-10,
  top_db: float | None = 80.0,
) -> jax.Array:
  """Power spectrogram -> dB, `10 log10(max(amin, S) / max(amin, ref))`, as librosa.

  `ref` is a number, an array broadcasting against `S`, or a callable such as `np.max`.
  `top_db` clamps each example to at most `top_db` below its own peak.

  Batched input (`S` with more than two axes): an example is the last two axes (bands, frames).
  A callable `ref` and the `top_db` peak are taken per example, so each clip gets the result
  librosa gives for it alone (librosa's multichannel call would use one peak for the whole
  array). np.max/np.min/np.mean/np.median are recognised; other callables must be
  jax-traceable (they are vmapped over the examples).
  """
  _check_db_args(amin, top_db)
  S = jnp.asarray(S)
  if jnp.iscomplexobj(S):  # librosa warns and uses the magnitude; phase has no dB.
    S = jnp.abs(S)
  S = S.astype(jnp.promote_types(S.dtype, jnp.float32))
  top_db = None if top_db is None else float(top_db)
  return _db(S, _reference_value(S, ref), jnp.asarray(amin, S.dtype), top_db=top_db)


def amplitude_to_db(
  S: ArrayLike,
  ref: float | ArrayLike | Callable = 1.0,
  amin: float = 1e-5,
  top_db: float | None = 80.0,
) -> jax.Array:
  """Amplitude spectrogram -> dB, `20 log10(|S| / ref)`, as librosa (see `power_to_db`)."""
  _check_db_args(amin, top_db)
  magnitude = jnp.abs(jnp.asarray(S)).astype(jnp.float32)
  ref_value = _reference_value(magnitude, ref)
  return power_to_db(jnp.square(magnitude), ref=jnp.square(ref_value), amin=amin**2, top_db=top_db)


def db_to_power(S_db: ArrayLike, ref: float = 1.0) -> jax.Array:
  """Inverse of `power_to_db` (without the clamping): `ref * 10 ** (S_db / 10)`."""
  return ref * jnp.power(10.0, jnp.asarray(S_db, dtype=jnp.float32) * 0.1)


# ----------------------------------------------------------------------------------------------
# MFCC
# ----------------------------------------------------------------------------------------------


def dct_matrix(
  n_in: int, n_out: int | None = None, dct_type: int = 2, norm: str | None = "ortho"
) -> np.ndarray:
  """`[n_out, n_in]` float32 matrix D with `D @ x == scipy.fft.dct(x, type, norm=norm)[:n_out]`.

  Types 2 and 3 (its inverse, HTK-style MFCC), with norm 'ortho' or None.
  """
  n_out = n_in if n_out is None else n_out
  if norm not in ("ortho", None):
    raise ValueError(f"DCT norm must be 'ortho' or None, got {norm!r}")
  k = np.arange(n_out)[:, None]
  n = np.arange(n_in)[None, :]
  if dct_type == 2:
    mat = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
    if norm == "ortho":
      mat[0] *= np.sqrt(1.0 / (4 * n_in))
      mat[1:] *= np.sqrt(1.0 / (2 * n_in))
  elif dct_type == 3:
    mat = 2.0 * np.cos(np.pi * n * (2 * k + 1) / (2 * n_in))
    mat[:, 0] = 1.0
    if norm == "ortho":
      mat[:, 0] /= np.sqrt(n_in)
      mat[:, 1:] *= np.sqrt(1.0 / (2 * n_in))
  else:
    raise ValueError(f"dct_type must be 2 or 3, got {dct_type}")
  return mat.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _cached_dct(n_in, n_out, dct_type, norm, lifter) -> np.ndarray:
  """DCT matrix with the cepstral lifter folded into its rows (both scale rows).

  numpy, not jax, for the reason given at `_cached_filterbank`.
  """
  mat = dct_matrix(n_in, n_out, dct_type, norm).astype(np.float64)
  if lifter > 0:
    mat *= (1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(1, n_out + 1) / lifter))[:, None]
  mat = mat.astype(np.float32)
  mat.flags.writeable = False
  return mat


@jax.jit
def _apply_dct(basis, S_db):
  return jnp.einsum("km,...mt->...kt", basis, S_db, precision=_HIGHEST)


def mfcc(
  y: ArrayLike | None = None,
  sr: float = SR,
  S: ArrayLike | None = None,
  n_mfcc: int = 20,
  dct_type: int = 2,
  norm: str | None = "ortho",
  lifter: float = 0.0,
  mel_norm: str | float | None = "slaney",
  **mel_kwargs: Any,
) -> jax.Array:
  """Mel-frequency cepstral coefficients, as librosa.feature.mfcc.

  Args:
    y: waveform `[..., samples]`, or None when `S` is given.
    sr: sample rate of `y`.
    S: precomputed log-power mel spectrogram `[..., n_mels, frames]` (dB).
    n_mfcc, dct_type, norm, lifter: number of coefficients, DCT type (2 or 3) and norm,
      cepstral liftering (0 = none), as in librosa.
    mel_norm: filter normalization passed to `mel_spectrogram` as `norm`.
    **mel_kwargs: further `mel_spectrogram` arguments (n_fft, hop_length, n_mels, ...).

  Returns:
    float32 `[..., n_mfcc, frames]`. With batched `y` the dB floor (top_db) is per example.
  """
  if lifter < 0:
    raise ValueError(f"MFCC lifter={lifter} must be a non-negative number")
  if S is None:
    if y is None:
      raise ValueError("mfcc needs a waveform y or a dB mel spectrogram S")
    S = power_to_db(mel_spectrogram(y, sr=sr, norm=mel_norm, **mel_kwargs))
  S = jnp.asarray(S, dtype=jnp.float32)
  # librosa slices the DCT output, so asking for more coefficients than bands gives n_mels.
  basis = _cached_dct(S.shape[-2], min(n_mfcc, S.shape[-2]), dct_type, norm, float(lifter))
  return _apply_dct(basis, S)
