"""Tests of tools/benchmark.py and of the PyTorch references it times (benchmarks/torch_ref).

The references must be the same networks as the Flax models: equal parameter counts at the
seed sizes, and equal outputs at a tiny size once the Flax weights are copied in.
"""

import functools
import json
import os
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, ROOT)
from tools import benchmark  # noqa: E402  pylint: disable=wrong-import-position

try:
  import torch
except ImportError:  # the harness skips torch records without it; so do these tests
  torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (extra 'bench')")


def _key(seed=0):
  # 'rbg' keys compile several times faster than threefry on CPU; any init will do here.
  return jax.random.key(seed, impl="rbg")


@pytest.fixture
def fast_prng():
  """The trainer seeds with jax.random.PRNGKey: make that 'rbg' for one test, then restore."""
  before = jax.config.jax_default_prng_impl
  jax.config.update("jax_default_prng_impl", "rbg")
  yield
  jax.config.update("jax_default_prng_impl", before)


def _args(*argv):
  return benchmark.parse_args(list(argv))


def _jax_params(model, spec, batch) -> int:
  """Parameter count from shapes only: the seed conv VAE is traced, never allocated."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), batch)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


def _seed_model(name):
  """(config, spec, flax model, abstract batch) of a model at its seed size."""
  from jaxvae.variants import registry

  config = benchmark.load_config(name, _args())
  shape = benchmark.input_shape(config)
  spec = benchmark.data_spec(config, shape)
  model = registry.get(config.model.name).build_model(config.model, spec, dtype=config.dtype)
  batch = {
    "x": jax.ShapeDtypeStruct((2, *shape), np.float32),
    "mask": jax.ShapeDtypeStruct((2,), np.float32),
  }
  return config, spec, model, batch


def test_input_shapes_follow_the_configs():
  assert benchmark.input_shape(benchmark.load_config("conv_vae", _args())) == (128, 1292)
  assert benchmark.input_shape(benchmark.load_config("puzzle_vqvae", _args())) == (128, 32)
  small = benchmark.load_config("conv_vae", _args("--preset", "small"))
  assert benchmark.input_shape(small) == (64, 130)
  assert benchmark.input_shape(small, "32x16") == (32, 16)


@pytest.mark.parametrize("name,expected", [("puzzle_vqvae", 83_777), ("conv_vae", 63_555_809)])
def test_seed_parameter_counts_match(name, expected):
  config, spec, model, batch = _seed_model(name)
  assert _jax_params(model, spec, batch) == expected
  if torch is None:
    pytest.skip("torch is not installed")
  from benchmarks import torch_ref

  with torch.device("meta"):  # counting only: 63.6 M parameters need no memory
    torch_model, _ = torch_ref.build(config, spec.input_shape)
  assert torch_ref.param_count(torch_model) == expected


def test_transformer_reference_has_the_seed_size():
  if torch is None:
    pytest.skip("torch is not installed")
  from benchmarks import torch_ref
  from jaxvae.variants import registry

  config = benchmark.load_config("music_transformer", _args())  # the vaegan config, stage 1
  shape = benchmark.input_shape(config)
  assert shape == (512,)
  torch_model, _ = torch_ref.build(config, shape)
  # 774 x 256 tied embedding + 4 pre-LN blocks (789,760 each) + final LayerNorm.
  expected = 198_144 + 4 * 789_760 + 512
  assert torch_ref.param_count(torch_model) == expected
  model = registry.get("music_transformer").build_model(
    config.model, benchmark.data_spec(config, shape), dtype=config.dtype
  )
  batch = {
    "tokens": jax.ShapeDtypeStruct((2, 512), np.int32),
    "mask": jax.ShapeDtypeStruct((2,), np.float32),
  }
  shapes = jax.eval_shape(
    functools.partial(model.init, train=False),
    {"params": jax.random.key(0), "dropout": jax.random.key(1)},
    batch,
  )
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"])) == expected


@needs_torch
def test_the_torch_sampler_with_its_cache_equals_greedy_decoding_without_one():
  """top_p near 0 keeps only the likeliest token: the KV-cached sampler must then pick what
  argmax over the full forward pass picks at every position."""
  from benchmarks.torch_ref import transformer as torch_transformer

  torch.manual_seed(0)
  model = torch_transformer.MusicTransformer(40, 32, 2, 4, 64, 0.1, 64)
  cached = torch_transformer.generate(model, 20, 3, top_p=1e-6)
  assert cached.shape == (3, 21) and not model.training
  tokens = cached[:, :1]
  with torch.no_grad():
    for _ in range(20):
      logits = model(tokens)[:, -1]
      logits[:, [0, 1]] = -float("inf")
      tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
  assert torch.equal(cached, tokens)


def _copy(param, array):
  with torch.no_grad():
    param.copy_(torch.from_numpy(np.array(array, np.float32)))  # a writable copy


def _conv(module, p, flipped_transpose=False):
  """Flax kernel -> the torch layer. Conv: HWIO -> OIHW; a transpose_kernel=True ConvTranspose
  ([kh, kw, out, in]) maps the same way to torch's [in, out, kh, kw]. A plain flax
  ConvTranspose ([kh, kw, in, out], not flipped) is torch's kernel flipped in space."""
  kernel = np.asarray(p["kernel"])
  if flipped_transpose:
    kernel = kernel[::-1, ::-1].transpose(2, 3, 0, 1)
  else:
    kernel = kernel.transpose(3, 2, 0, 1)
  _copy(module.weight, kernel)
  _copy(module.bias, p["bias"])


def _bn(module, p):
  _copy(module.weight, p["scale"])
  _copy(module.bias, p["bias"])


@needs_torch
def test_vqvae_reference_computes_the_same_function():
  from benchmarks.torch_ref.puzzle_vqvae import PuzzleVQVAE as TorchVQVAE
  from jaxvae.models.vqvae import PuzzleVQVAE

  sizes = dict(num_codes=4, code_dim=8, grid=(6, 6), enc_channels=(4, 8), dec_channels=(8, 4, 4))
  x = np.random.default_rng(0).uniform(size=(2, 16, 8)).astype(np.float32)
  batch = {"x": x, "mask": np.ones(2, np.float32)}
  flax_model = PuzzleVQVAE(**sizes)
  variables = jax.jit(functools.partial(flax_model.init, train=False))(_key(), batch)
  want = jax.jit(functools.partial(flax_model.apply, train=False))(variables, batch)
  p = variables["params"]
  e, d = p["encoder"], p["decoder"]
  t = TorchVQVAE(**sizes).eval()  # eval: BatchNorm uses running stats, 0 / 1 in both
  _conv(t.enc_convs[0], e["Conv_0"]), _bn(t.enc_convs[1], e["BatchNorm_0"])
  _conv(t.enc_convs[3], e["Conv_1"]), _bn(t.enc_convs[4], e["BatchNorm_1"])
  _conv(t.enc_out, e["Conv_2"]), _copy(t.codebook, p["vq"]["codebook"])
  _conv(t.dec_convs[0], d["Conv_0"]), _bn(t.dec_convs[1], d["BatchNorm_0"])
  _conv(t.dec_convs[3], d["ConvTranspose_0"]), _bn(t.dec_convs[4], d["BatchNorm_1"])
  _conv(t.dec_convs[6], d["ConvTranspose_1"]), _bn(t.dec_convs[7], d["BatchNorm_2"])
  _conv(t.dec_out, d["Conv_1"])
  with torch.no_grad():
    got = t(torch.from_numpy(x))
  np.testing.assert_array_equal(got["codes"].numpy(), np.asarray(want["codes"]))
  np.testing.assert_allclose(got["recon"].numpy(), np.asarray(want["recon"]), atol=1e-5)
  np.testing.assert_allclose(float(got["vq_loss"]), float(want["vq_loss"]), rtol=1e-4)


def _dense(module, p, in_perm=None, out_perm=None):
  w = np.asarray(p["kernel"]).T  # torch Linear is [out, in]
  b = np.asarray(p["bias"])
  if in_perm is not None:
    w = w[:, in_perm]
  if out_perm is not None:
    w, b = w[out_perm], b[out_perm]
  _copy(module.weight, w)
  _copy(module.bias, b)


@needs_torch
def test_conv_vae_reference_computes_the_same_function():
  """Encoder means / log-variances and decoder outputs agree, including the resize of a
  width that is not a multiple of 8 (20 -> 16 -> 20), once the flatten order (flax NHWC,
  torch NCHW) and the transposed-conv kernels (torch flips them) are mapped."""
  from benchmarks.torch_ref.conv_vae import ConvVAE as TorchConvVAE
  from jaxvae.models.vae import ConvVAE

  shape, channels, latent = (16, 20), (2, 3, 4), 5
  x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
  batch = {"x": x, "mask": np.ones(2, np.float32)}
  flax_model = ConvVAE(input_shape=shape, channels=channels, latent_dim=latent)
  variables = jax.jit(lambda b: flax_model.init({"params": _key(0), "sample": _key(1)}, b))(batch)
  z = np.random.default_rng(2).standard_normal((2, latent)).astype(np.float32)
  mu, logvar, want = jax.jit(
    lambda v, b, z: (
      *flax_model.apply(v, b, False, method="encode"),
      flax_model.apply(v, z, b, False, method="decode"),
    )
  )(variables, batch, z)
  p = variables["params"]
  t = TorchConvVAE(shape, channels, latent).eval()
  gh, gw, c = 16 // 8, 20 // 8, channels[-1]
  # torch flat index (c, h, w) <- flax flat index (h, w, c)
  nhwc_of_nchw = np.arange(gh * gw * c).reshape(gh, gw, c).transpose(2, 0, 1).reshape(-1)
  for i in range(3):
    _conv(t.encoder[3 * i], p[f"enc_convs_{i}"])
    _bn(t.encoder[3 * i + 1], p[f"enc_bns_{i}"])
  _dense(t.mu_head, p["mu_head"], in_perm=nhwc_of_nchw)
  _dense(t.logvar_head, p["logvar_head"], in_perm=nhwc_of_nchw)
  _dense(t.dec_dense, p["dec_dense"], out_perm=nhwc_of_nchw)
  for i in range(3):
    _conv(t.decoder[3 * i], p[f"dec_convs_{i}"], flipped_transpose=True)
    if i < 2:
      _bn(t.decoder[3 * i + 1], p[f"dec_bns_{i}"])
  with torch.no_grad():
    got_mu, got_logvar = t.encode(torch.from_numpy(x))
    got = t.decode(torch.from_numpy(z))
  np.testing.assert_allclose(got_mu.numpy(), np.asarray(mu), atol=1e-5)
  np.testing.assert_allclose(got_logvar.numpy(), np.asarray(logvar), atol=1e-5)
  np.testing.assert_allclose(got.numpy(), np.asarray(want), atol=1e-5)


def _tiny_argv(tmp_path, frameworks):
  return [
    "--models",
    "puzzle_vqvae",
    "--frameworks",
    frameworks,
    "--shape",
    "16x8",
    "--batch-size",
    "4",
    "--steps",
    "2",
    "--devices",
    "1",
    "--no-isolate",
    "--threads",
    "1",
    "--override",
    "model.grid=(4, 4)",
    "--override",
    "model.enc_channels=(4, 8)",
    "--override",
    "model.dec_channels=(8, 4, 4)",
    "--override",
    "model.num_codes=4",
    "--override",
    "model.code_dim=8",
    "--json",
    str(tmp_path / "bench.json"),
  ]


def test_harness_times_both_frameworks_and_writes_json(tmp_path, capsys, fast_prng):
  frameworks = "jax,torch" if torch is not None else "jax"
  benchmark.main(_tiny_argv(tmp_path, frameworks))
  records = json.loads((tmp_path / "bench.json").read_text())
  assert [r["framework"] for r in records] == frameworks.split(",")
  for r in records:
    assert not r.get("skipped"), r
    for key in (
      "model",
      "framework",
      "device",
      "dtype",
      "batch_size",
      "samples_per_s",
      "compile_s",
    ):
      assert key in r, key
    assert r["model"] == "puzzle_vqvae" and r["batch_size"] == 4 and r["dtype"] == "float32"
    assert r["samples_per_s"] > 0 and r["compile_s"] > 0
    assert 0.0 <= r["input_wait_frac"] < 1.0
    assert r["peak_mem_bytes"] > 0 and r["input_shape"] == [16, 8]
  out = capsys.readouterr().out
  assert "samples/s" in out
  if torch is not None:
    assert records[0]["params"] == records[1]["params"]  # the same tiny network
    assert "puzzle_vqvae: jax/torch t" in out


def test_missing_model_is_skipped_with_a_reason(tmp_path):
  records = benchmark.main(
    [
      "--models",
      "no_such_model",
      "--frameworks",
      "jax",
      "--no-isolate",
      "--json",
      str(tmp_path / "b.json"),
    ]
  )
  assert records[0]["skipped"] == "no config file configs/no_such_model.py"
  assert json.loads((tmp_path / "b.json").read_text())[0]["samples_per_s"] is None


def test_ratio_and_seed004_lines():
  def rec(framework, mode, rate):
    return {
      "model": "puzzle_vqvae",
      "framework": framework,
      "mode": mode,
      "samples_per_s": rate,
      "compile_s": 1.0,
      "batch_size": 64,
      "input_shape": [128, 32],
    }

  records = [
    rec("jax", "jax", 1000.0),
    rec("torch", "torch t2", 400.0),
    {"model": "conv_vae", "framework": "torch", "skipped": "reason"},
  ]
  assert benchmark.ratios(records) == [
    "puzzle_vqvae: jax/torch t2 = 2.50  (compile 1.00 s vs 1.00 s)"
  ]
  sampled = [
    dict(records[0], generate_tokens_per_s=300.0),
    dict(records[1], generate_tokens_per_s=200.0),
  ]
  assert benchmark.ratios(sampled)[1] == (
    "puzzle_vqvae: sampling jax/torch t2 = 1.50  (300 vs 200 tokens/s, KV-cached)"
  )
  unguarded = records + [rec("jax", "jax.unguarded", 1250.0)]
  assert benchmark.ratios(unguarded)[0] == (
    "puzzle_vqvae: jax/jax.unguarded = 0.800  (the non-finite guard's cost)"
  )
  (line,) = benchmark.seed004_line(records)
  assert "= 4.2 min" in line  # 250,000 clips / 1000 per s = 250 s


def test_jobs_expand_frameworks_and_threads():
  args = _args("--models", "conv_vae,puzzle_vqvae", "--threads", "1,2", "--torch-compile")
  got = benchmark.jobs(args)
  assert got[:5] == [
    ("conv_vae", "jax", 0),
    ("conv_vae", "torch", 1),
    ("conv_vae", "torch", 2),
    ("conv_vae", "torch.compile", 1),
    ("conv_vae", "torch.compile", 2),
  ]
  assert len(got) == 10
  got = benchmark.jobs(_args("--models", "conv_vae", "--frameworks", "jax,jax.unguarded"))
  assert got == [("conv_vae", "jax", 0), ("conv_vae", "jax.unguarded", 0)]


def test_transformer_model_flops_follow_the_palm_formula():
  from conftest import load_config

  config = load_config("music_transformer_vaegan.py:small", {})
  # d 64, 2 layers, d_ff 128, vocab 774: 6 x (2 x (4 d^2 + 2 d d_ff) + d V) + 12 L d (T+1)/2.
  per_token = 6 * (2 * (4 * 64 * 64 + 2 * 64 * 128) + 64 * 774) + 12 * 2 * 64 * 64.5
  assert benchmark.transformer_model_flops(config, 128) == per_token
  sliding = load_config(
    "music_transformer_vaegan.py:small", {"model.attention": "sliding", "model.window": "16"}
  )
  assert benchmark.transformer_model_flops(sliding, 128) == per_token - 12 * 2 * 64 * (64.5 - 16)
  hier = load_config(
    "music_transformer_vaegan.py:small",
    {"model.attention": "hierarchical", "model.window": "16", "model.global_stride": "8"},
  )
  assert benchmark.transformer_model_flops(hier, 128) == (
    per_token - 12 * 2 * 64 * (64.5 - 16 - 112**2 / (2 * 128 * 8))
  )
  assert benchmark.peak_tflops("gpu:NVIDIA H100 80GB HBM3", "bfloat16", 0.0) == 989.0
  assert benchmark.peak_tflops("cpu", "float32", 0.0) is None


def test_wallclock_splits_a_run_and_the_second_run_loads_its_programs(
  tmp_path, tiny_overrides, monkeypatch
):
  """tools/wallclock.py (also `benchmark.py --wallclock`): two runs of one command from an
  empty compilation cache; the second compiles nothing (every program is a cache hit)."""
  monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
  overrides = {k: v for k, v in tiny_overrides.items() if not k.startswith("model.")}
  overrides |= {"train.epochs": "1", "train.image_every_epochs": "0", "model.hidden": "(16,)"}
  argv = [
    "--wallclock",
    "--config=configs/basic_vae.py:small",  # an MLP: the cheapest model to compile
    "--runs=2",
    "--fresh-cache",
    f"--workdir={tmp_path / 'wc'}",
    f"--json={tmp_path / 'wc.json'}",
    "--",
    *[f"--config.{k}={v}" for k, v in overrides.items()],
  ]
  first, second = benchmark.main(argv)
  assert first["cache_misses"] > 0 and first["cache_hits"] == 0
  assert second["cache_hits"] == second["compiles"] > 0
  assert second["cache_misses"] == 0
  assert second["compile_s"] < first["compile_s"]
  for r in (first, second):
    total = r["startup_s"] + r["shutdown_s"] + sum(r[f"{p}_s"] for p in wallclock_phases())
    assert total == pytest.approx(r["wall_s"], rel=0.05)
  assert os.listdir(tmp_path / "wc" / "xla_cache")
  assert json.load(open(tmp_path / "wc.json"))[1]["cache_hits"] == second["cache_hits"]


def wallclock_phases():
  from tools import wallclock

  return wallclock.PHASES


def test_the_vocoder_benchmark_times_the_generator_and_names_a_missing_reference(tmp_path, capsys):
  out = tmp_path / "vocoder.json"
  argv = ["--vocoder", "--preset", "tiny", "--repeats", "1", "--batches", "1,2"]
  record = benchmark.main(argv + ["--json", str(out), "--vocos-path", str(tmp_path / "none")])
  assert set(record["jax"]["seconds"]) == {"1", "2"} and record["jax"]["parameters"] > 0
  assert record["frames"] == 1 + int(3.0 * 22050) // 512  # 3 s at the small features' hop
  assert "error" in record["vocos"]  # no vocos installed there: said, not a crash
  assert json.loads(out.read_text())["preset"] == "tiny"
  printed = capsys.readouterr().out
  assert "batch  1: jaxvae x" in printed and "vocos reference failed" in printed


def test_the_wave_benchmark_times_offline_and_streaming_decode(capsys):
  assert benchmark.main(["--wave", "--preset", "tiny", "--sr", "22050", "--seconds", "0.5"]) == 0
  record = json.loads(capsys.readouterr().out)
  assert record["hop"] == 16 and record["stream_chunk_frames"] == 1
  assert record["offline_real_time_factor"] > 0 and record["stream_real_time_factor"] > 0
  assert record["stream_encode_real_time_factor"] > 0


def test_the_sampling_breakdown_times_decode_steps_and_the_sampling_head(capsys):
  sys.path.insert(0, os.path.join(ROOT, "tools"))
  import bench_sampling

  args = ["--preset", "quick_test", "--batch-size", "2", "--lengths", "16,32", "--steps", "2"]
  assert bench_sampling.main(args) == 0
  record = json.loads(capsys.readouterr().out)
  assert set(record["decode_ms"]) == {"16", "32"} and record["sampling_head_ms"] > 0


def test_model_part_names_the_module_and_the_pass():
  part = benchmark.model_part
  assert (
    part("jit(guarded)/jvp(PuzzleVQVAE)/decoder/ConvTranspose_1/ConvTranspose_1._phases/slice")
    == "fwd decoder/ConvTranspose_1/ConvTranspose_1._phases"
  )
  assert (
    part("jit(guarded)/transpose(jvp(Model))/generator/blocks_3/SelfAttention_0/exp")
    == "bwd generator/blocks_3/SelfAttention_0"
  )
  assert part("jit(guarded)/jvp(PuzzleVQVAE)/decoder/select_n") == "fwd decoder"
  assert part("jit(guarded)/reduce_sum") == "fwd reduce_sum"


def test_the_jax_profile_adds_up_its_time_by_model_part(tmp_path, capsys, fast_prng):
  argv = _tiny_argv(tmp_path, "jax") + ["--profile", "--profile-steps", "1"]
  benchmark.main(argv)
  (record,) = json.loads((tmp_path / "bench.json").read_text())
  parts = record["profile"]["top_parts"]
  assert [ms for _, ms, _ in parts] == sorted((ms for _, ms, _ in parts), reverse=True)
  assert any(name.startswith("bwd decoder/ConvTranspose_") for name, _, _ in parts), parts
  assert "by model part (forward / backward):" in capsys.readouterr().out
