"""Waveform augmentation (pitch, stretch, noise, gain) and jittable spectrogram masking."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvae.audio import augment

SR = 16000
OFF = dict(p_pitch=0.0, p_stretch=0.0, p_noise=0.0, p_gain=0.0)


def _sine(freq=440.0, seconds=1.0, amp=0.3):
  t = np.arange(int(SR * seconds)) / SR
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _music(seconds=1.0):
  """A few harmonics with a changing envelope, so every edit leaves a trace."""
  t = np.arange(int(SR * seconds)) / SR
  y = sum(np.sin(2 * np.pi * h * 220.0 * t) / h for h in range(1, 5))
  return (0.2 * y * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _peak_hz(y):
  spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
  return np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spectrum)]


def _only(name):
  return dict(OFF, **{name: 1.0})


# ----------------------------------------------------------------------------------------------
# Waveforms
# ----------------------------------------------------------------------------------------------


def test_all_off_is_the_identity_and_keeps_length_and_dtype():
  y = _music()
  out = augment.augment_waveform(y.astype(np.float64), SR, np.random.default_rng(0), **OFF)
  assert out.dtype == np.float32 and out.shape == y.shape
  np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("name", ["p_pitch", "p_stretch", "p_noise", "p_gain"])
def test_each_augmentation_changes_the_signal_and_keeps_length(name):
  y = _music()
  for seed in range(3):
    out = augment.augment_waveform(y, SR, np.random.default_rng(seed), **_only(name))
    assert out.dtype == np.float32 and out.shape == y.shape
    assert np.all(np.isfinite(out))
    assert np.abs(out - y).max() > 1e-3, (name, seed)


def test_default_probabilities_give_varied_copies_and_are_deterministic():
  y = _music()
  copies = [augment.augment_waveform(y, SR, augment.clip_rng(0, "a/b.wav", k)) for k in range(4)]
  again = augment.augment_waveform(y, SR, augment.clip_rng(0, "a/b.wav", 2))
  np.testing.assert_array_equal(copies[2], again)
  for i in range(4):
    for j in range(i):
      assert not np.array_equal(copies[i], copies[j])
  other_clip = augment.augment_waveform(y, SR, augment.clip_rng(0, "a/c.wav", 2))
  assert not np.array_equal(copies[2], other_clip)


def test_pitch_shift_by_an_octave_doubles_the_peak_frequency():
  y = _sine(440.0)
  up = augment.pitch_shift(y, SR, 12.0)
  assert up.shape == y.shape
  assert abs(_peak_hz(up) - 880.0) < 880.0 * 0.02
  assert abs(_peak_hz(augment.pitch_shift(y, SR, -12.0)) - 220.0) < 220.0 * 0.02


def test_random_pitch_shift_moves_the_peak_by_the_drawn_amount():
  y = _sine(440.0)
  for seed in range(3):
    kwargs = dict(_only("p_pitch"), max_semitones=4.0)
    params = augment.sample_params(np.random.default_rng(seed), **kwargs)
    out = augment.augment_waveform(y, SR, np.random.default_rng(seed), **kwargs)
    expected = 440.0 * 2 ** (params.semitones / 12)
    assert abs(_peak_hz(out) - expected) < 0.02 * expected


def test_time_stretch_changes_tempo_not_length():
  # Clicks every 0.25 s: a faster rate brings the second click earlier.
  y = np.zeros(SR, np.float32)
  y[:: SR // 4] = 0.5
  fast = augment.time_stretch(y, 1.25)
  assert fast.shape == y.shape
  onset = lambda z: np.argmax(np.abs(z[SR // 8 :]) > 0.1 * np.abs(z).max()) + SR // 8
  assert onset(fast) < 0.9 * onset(y)


def test_noise_snr_is_within_the_range():
  y = _music()
  for seed in range(10):
    out = augment.augment_waveform(
      y, SR, np.random.default_rng(seed), **_only("p_noise"), noise_snr_db=(10.0, 20.0)
    )
    noise = out.astype(np.float64) - y
    snr = 10 * np.log10(np.mean(np.square(y, dtype=np.float64)) / np.mean(noise**2))
    assert 10.0 - 0.2 < snr < 20.0 + 0.2


def test_gain_is_within_the_db_range():
  y = _music()
  gains = []
  for seed in range(10):
    out = augment.augment_waveform(
      y, SR, np.random.default_rng(seed), **_only("p_gain"), gain_db=(-6.0, 6.0)
    )
    db = 20 * np.log10(np.abs(out).max() / np.abs(y).max())
    np.testing.assert_allclose(out, y * 10 ** (db / 20), atol=1e-5)  # a pure level change
    gains.append(db)
  assert -6.0 - 1e-3 <= min(gains) and max(gains) <= 6.0 + 1e-3
  assert max(gains) - min(gains) > 3.0  # draws really spread over the range


def test_loud_results_are_scaled_not_clipped():
  y = _sine(amp=0.9)
  out = augment.augment_waveform(
    y, SR, np.random.default_rng(0), **_only("p_gain"), gain_db=(12.0, 12.0)
  )
  assert np.abs(out).max() <= augment.PEAK + 1e-6
  np.testing.assert_allclose(out / np.abs(out).max(), y / np.abs(y).max(), atol=1e-5)


def test_bad_arguments():
  with pytest.raises(ValueError, match="p_noise"):
    augment.augment_waveform(_music(), SR, np.random.default_rng(0), p_noise=1.5)
  with pytest.raises(ValueError, match="mono"):
    augment.augment_waveform(np.zeros((2, 100)), SR, np.random.default_rng(0))


def test_config_section_to_kwargs():
  config = ml_collections.ConfigDict(
    {
      "data": {
        "augment": {
          "p_pitch": 1.0,
          "max_semitones": 1.0,
          "p_stretch": 0.0,
          "max_stretch": 0.1,
          "p_noise": 0.0,
          "noise_snr_db": (20.0, 40.0),
          "p_gain": 0.0,
          "gain_db": (-6.0, 6.0),
        }
      }
    }
  )
  kwargs = augment.waveform_kwargs(config)
  assert kwargs == augment.waveform_kwargs(config.data.augment)
  assert kwargs["p_pitch"] == 1.0 and kwargs["noise_snr_db"] == (20.0, 40.0)


# ----------------------------------------------------------------------------------------------
# Spectrogram masking
# ----------------------------------------------------------------------------------------------

# Jitted once per static setting: eager op-by-op dispatch compiles every primitive separately
# and would dominate this file's run time.
_mask = jax.jit(
  augment.spec_mask,
  static_argnames=("time_masks", "time_width", "freq_masks", "freq_width", "value"),
)


def _batch(b=16, f=32, t=50):
  x = np.random.default_rng(1).standard_normal((b, f, t)) + np.arange(b)[:, None, None]
  return jnp.asarray(x, jnp.float32)


def test_zero_masks_are_the_identity():
  x = _batch()
  out = _mask(jax.random.key(0), x, time_masks=0, freq_masks=0)
  chex.assert_trees_all_equal(out, x)


def test_time_masks_are_whole_frames_within_the_width_bound_filled_with_the_mean():
  x = _batch(b=64)
  out = _mask(jax.random.key(0), x, time_masks=2, time_width=0.1, freq_masks=0)
  chex.assert_shape(out, x.shape)
  changed = np.asarray(out != x)
  frames = changed.any(axis=1)  # [B, T]
  assert np.array_equal(changed, np.broadcast_to(frames[:, None, :], changed.shape))
  per_example = frames.sum(axis=1)
  assert per_example.max() <= 2 * int(0.1 * 50)
  # Widths are uniform in 0..5, two bands: about 5 of 50 frames on average.
  assert 2.0 < per_example.mean() < 8.0
  means = np.asarray(x).mean(axis=(1, 2))
  rows, bins, frames_hit = np.nonzero(changed)
  np.testing.assert_allclose(
    np.asarray(out)[rows, bins, frames_hit], means[rows], rtol=1e-5, atol=1e-5
  )


def test_freq_masks_are_whole_bins_and_examples_differ():
  x = _batch()
  out = _mask(jax.random.key(3), x, time_masks=0, freq_masks=3, freq_width=0.2, value=-7.0)
  changed = np.asarray(out != x)
  bins = changed.any(axis=2)  # [B, F]
  assert np.array_equal(changed, np.broadcast_to(bins[:, :, None], changed.shape))
  assert bins.sum(axis=1).max() <= 3 * int(0.2 * 32)
  assert np.all(np.asarray(out)[changed] == -7.0)
  assert len({tuple(row) for row in bins}) > len(bins) // 2  # positions differ per example


def test_band_positions_are_drawn_per_example():
  x = _batch(b=64)
  out = _mask(jax.random.key(4), x, time_masks=1, time_width=0.2, freq_masks=0)
  frames = np.asarray(out != x).any(axis=1)
  starts = {int(np.argmax(row)) for row in frames if row.any()}
  assert len(starts) > 10


def test_jitted_matches_eager_and_is_deterministic_per_key():
  x = _batch()
  fn = jax.jit(functools.partial(augment.spec_mask, time_masks=2, freq_masks=2))
  a = fn(jax.random.key(5), x)
  chex.assert_trees_all_equal(a, fn(jax.random.key(5), x))
  chex.assert_trees_all_close(a, augment.spec_mask(jax.random.key(5), x), atol=1e-6)
  assert not np.array_equal(np.asarray(a), np.asarray(fn(jax.random.key(6), x)))
  assert np.any(np.asarray(a) != np.asarray(x))


def test_maybe_spec_mask_follows_the_config_and_returns_a_new_dict():
  section = dict(spec_mask=True, time_masks=1, time_width=0.2, freq_masks=1, freq_width=0.2)
  batch = {"x": _batch(), "mask": jnp.ones(16)}
  on = augment.maybe_spec_mask(
    jax.random.key(0), batch, ml_collections.ConfigDict({"data": {"augment": section}})
  )
  assert on is not batch and on["mask"] is batch["mask"]
  assert np.any(np.asarray(on["x"]) != np.asarray(batch["x"]))
  off = augment.maybe_spec_mask(
    jax.random.key(0), batch, ml_collections.ConfigDict(dict(section, spec_mask=False))
  )
  assert off is not batch and off["x"] is batch["x"]
  step = jax.jit(
    lambda key, b: augment.maybe_spec_mask(
      key, b, ml_collections.ConfigDict({"data": {"augment": section}})
    )["x"]
  )
  chex.assert_trees_all_close(step(jax.random.key(0), batch), on["x"])


def test_train_step_masks_the_input_but_reconstructs_the_clean_batch():
  import flax.linen as nn
  import optax

  from jaxvae.training import state as train_state
  from jaxvae.training import step as step_lib

  class Identity(nn.Module):  # recon = input * w, w = 1: a perfect copy of what it is given
    @nn.compact
    def __call__(self, batch, train=False):
      w = self.param("w", nn.initializers.ones, ())
      return {"recon": batch["x"] * w}

  def objective(outputs, batch, *, kl_weight, config):
    loss = jnp.mean((outputs["recon"] - batch["x"]) ** 2)
    return loss, {"loss": loss}

  config = ml_collections.ConfigDict(
    {
      "seed": 0,
      "dtype": "float32",
      "train": {"loss_scale_init": 1.0},
      "data": {
        "augment": dict(spec_mask=True, time_masks=2, time_width=0.3, freq_masks=2, freq_width=0.3)
      },
    }
  )
  batch = {"x": _batch() + 3.0, "mask": jnp.ones(16)}  # offset: masked zeros differ from x
  state, tx = train_state.create_state(Identity(), lambda p: optax.sgd(0.0), batch, config)
  step = jax.jit(step_lib.make_train_step(Identity(), tx, objective, lambda s: 0.0, config))
  _, metrics = step(state, batch)
  assert float(metrics["loss"]) > 0.1  # the masked bins count against the clean target
  config.data.augment.spec_mask = False
  _, metrics = jax.jit(step_lib.make_train_step(Identity(), tx, objective, lambda s: 0.0, config))(
    state, batch
  )
  assert float(metrics["loss"]) == 0.0
