"""Music transformer family: attention variants, causality, the shifted VAE decoder, cached
generation, objectives, and the VAE-GAN step (tiny configs, one compile per model)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvae.losses import adversarial
from jaxvae.models import transformer as tr
from jaxvae.sampling import tokens as token_sampling
from jaxvae.symbolic.midi import PAD
from jaxvae.symbolic.midi import START
from jaxvae.variants import music_transformer as mt

T = 33  # tokens per window: the decoder reads 32 and predicts 32.
TINY = dict(
  vocab_size=774,
  d_model=32,
  num_layers=2,
  num_heads=4,
  d_ff=64,
  dropout=0.1,
  max_len=128,
  window=8,
  global_stride=4,
  attention_block=8,  # the cached decoding steps read blocks of 8 positions
  enc_layers=1,
  latent_span=T,
  disc_dim=16,
  disc_layers=2,
)
VARIANTS = ("full", "sliding", "hierarchical")


def tiny_model(mode="transformer", attention="full", dtype="float32", **extra):
  cfg = ml_collections.ConfigDict(dict(TINY, mode=mode, attention=attention, **extra))
  return tr.build_music_transformer(cfg, None, dtype=dtype)


def rkey(seed):
  """'rbg' keys: the model code is the same, but its random ops (dropout, Gumbel, sampling)
  compile faster than with threefry, and compiling is most of this file's time."""
  return jax.random.key(seed, impl="rbg")


def random_tokens(seed, shape=(2, T)):
  tokens = np.random.default_rng(seed).integers(4, 774, shape).astype(np.int32)
  tokens[:, 0] = START
  return tokens


def batch_of(tokens, mask=None):
  mask = np.ones(tokens.shape[0], np.float32) if mask is None else np.asarray(mask, np.float32)
  return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


RNGS = {name: rkey(i) for i, name in enumerate(("params", "sample", "dropout", "vq"))}


def quick_init(model, batch):
  """Variables with exactly the shapes `model.init` gives (traced, not compiled), filled from
  a seeded numpy generator with fan-in scaling. Compiling the real initializers costs more
  than the rest of a test; `test_real_init_...` runs them once."""
  shapes = jax.eval_shape(lambda b: model.init(RNGS, b), batch)
  gen = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "bias"):
      return jnp.asarray(np.full(leaf.shape, 1.0 if name == "scale" else 0.0), leaf.dtype)
    fan_in = leaf.shape[-1] if name == "embedding" else np.prod(leaf.shape[:-1])
    return jnp.asarray(gen.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def setup_model(mode="transformer", attention="full", dtype="float32"):
  """(model, variables, forward) with forward(tokens, z=None) jitted once per model.

  The VAE-GAN runs without dropout: only its train step uses train=True, and each dropout
  layer adds seconds to that step's compile."""
  model = tiny_model(mode, attention, dtype, **({"dropout": 0.0} if mode == "vaegan" else {}))
  variables = quick_init(model, batch_of(random_tokens(0)))
  apply = jax.jit(
    lambda v, tokens, z: model.apply(
      v, batch_of(tokens), train=False, z=z, rngs={"sample": rkey(5)}
    )
  )
  return model, variables, lambda tokens, z=None: apply(variables, tokens, z)


def normal(seed, shape):
  """Test data from numpy: eager jax.random calls would each compile a kernel."""
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def max_abs(tree) -> float:
  """Largest |x| over a pytree, on the host (eager jnp ops would compile one kernel each)."""
  return max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(tree))


def rand_qkv(seed, t, heads=2, dim=4, batch=2):
  return list(normal(seed, (3, batch, t, heads, dim)))


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def test_attention_mask_definition():
  allowed = lambda kind, q, w, s: [
    k for k in range(q + 3) if bool(tr.attention_allowed(q, k, kind, w, s))
  ]
  assert allowed("full", 5, 3, 4) == [0, 1, 2, 3, 4, 5]
  assert allowed("sliding", 5, 3, 4) == [3, 4, 5]
  assert allowed("hierarchical", 9, 2, 4) == [0, 4, 8, 9]


def test_full_attention_matches_loop_reference():
  q, k, v = rand_qkv(0, 11)
  got = np.asarray(jax.jit(tr.causal_attention)(q, k, v))
  q, k, v = map(np.asarray, (q, k, v))
  want = np.zeros_like(got)
  for t in range(11):
    scores = np.einsum("bhd,bshd->bhs", q[:, t], k[:, : t + 1]) / np.sqrt(q.shape[-1])
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want[:, t] = np.einsum("bhs,bshd->bhd", p, v[:, : t + 1])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "kind,t,window,stride",
  [
    ("sliding", 37, 8, 0),
    ("sliding", 5, 8, 0),
    ("sliding", 32, 1, 0),
    ("hierarchical", 40, 4, 3),
    ("hierarchical", 64, 16, 16),
  ],
)
def test_blockwise_equals_naive_masked_attention(kind, t, window, stride):
  q, k, v = rand_qkv(t + window, t)
  pos = np.arange(t)
  naive = jax.jit(
    lambda q, k, v: tr.dense_attention(
      q, k, v, tr.attention_allowed(pos[:, None], pos[None], kind, window, stride)
    )
  )(q, k, v)
  blockwise = jax.jit(
    lambda q, k, v: tr.local_attention(q, k, v, window, stride if kind == "hierarchical" else 0)
  )(q, k, v)
  np.testing.assert_allclose(blockwise, naive, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "t, block", [(100, 32), (128, 32), (33, 8), (100, "dpa"), (100, "prefix-32"), (128, "prefix-32")]
)
def test_blockwise_full_attention_equals_dense_with_its_gradients(t, block):
  """The online-softmax blocks give the masked dense attention's output and gradients (the
  block's running max is a constant of the gradient: it cancels); so do model.attention_impl
  'dpa' (jax.nn.dot_product_attention, here on XLA's ops) and 'prefix' (each query block
  against its keys' prefix)."""
  q, k, v = rand_qkv(t, t, heads=2, dim=8)
  blockwise = functools.partial(tr.attend, kind="full", window=0, global_stride=0, impl="dpa")
  if str(block).startswith("prefix"):
    size = int(block.split("-")[1])
    blockwise = functools.partial(tr.attend, kind="full", window=0, global_stride=0, block=size)
    blockwise = functools.partial(blockwise, impl="prefix")
  elif block != "dpa":
    blockwise = functools.partial(tr.blockwise_causal_attention, block=block)
  np.testing.assert_allclose(
    jax.jit(blockwise)(q, k, v), jax.jit(tr.causal_attention)(q, k, v), rtol=1e-5, atol=1e-5
  )
  grad = lambda fn: jax.jit(jax.grad(lambda *x: (fn(*x) ** 2).sum(), argnums=(0, 1, 2)))
  for a, b in zip(grad(blockwise)(q, k, v), grad(tr.causal_attention)(q, k, v)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_a_model_with_prefix_attention_gives_the_dense_models_logits():
  """model.attention_impl='prefix' inside the model (T = 32 in blocks of 8, weights shared
  with a dense model): the same logits up to float rounding."""
  dense, variables, forward = setup_model()
  prefix = tiny_model(attention_impl="prefix")
  tokens = random_tokens(3)
  got = jax.jit(lambda v, t: prefix.apply(v, batch_of(t), train=False))(variables, tokens)
  np.testing.assert_allclose(got["logits"], forward(tokens)["logits"], rtol=1e-4, atol=1e-4)


def test_blockwise_full_attention_does_the_work_the_mask_allows():
  """XLA's FLOP count of forward + backward at T = 512: the dense path computes the whole
  T x T, the blockwise one the causal triangle plus half the diagonal blocks, the prefix one
  each query block against its keys' prefix."""
  q, k, v = rand_qkv(0, 512, heads=2, dim=16)

  def flops(fn):
    compiled = jax.jit(jax.grad(lambda *x: (fn(*x) ** 2).sum(), argnums=(0, 1, 2)))
    cost = compiled.lower(q, k, v).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]

  dense = flops(tr.causal_attention)
  blockwise = flops(functools.partial(tr.blockwise_causal_attention, block=64))
  assert blockwise < 0.6 * dense
  # 'prefix' with 4 blocks: (4 + 1) / (2 * 4) of the scores, and of their gradients.
  assert flops(functools.partial(tr.prefix_causal_attention, block=128)) < 0.7 * dense


def _largest_intermediate(jaxpr) -> int:
  """Elements of the largest array any equation (at any nesting level) produces."""
  biggest = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      biggest = max(biggest, int(np.prod(getattr(var.aval, "shape", ()), dtype=np.int64)))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", None)
        if inner is not None:
          biggest = max(biggest, _largest_intermediate(getattr(inner, "jaxpr", inner)))
  return biggest


@pytest.mark.parametrize("attention", (*VARIANTS, "full-blockwise"))
def test_windowed_model_never_builds_a_t_by_t_matrix(attention):
  """At T = 2048 the windowed variants' and blockwise full attention's largest intermediate is
  far below T x T per head; dense 'full' is the control that shows the check can fail."""
  length, heads = 2048, 4
  impl = "blockwise" if attention.endswith("blockwise") else "dense"
  attention = attention.split("-")[0]
  model = tiny_model(
    "transformer",
    attention,
    max_len=2048,
    window=128,
    global_stride=64,
    attention_impl=impl,
    attention_block=128,  # the configs' block (TINY's 8 would trace 256 blocks: ~13 s)
  )
  tokens = jax.ShapeDtypeStruct((1, length + 1), jnp.int32)
  variables = jax.eval_shape(lambda t: model.init(RNGS, batch_of(t)), tokens)
  jaxpr = jax.make_jaxpr(lambda v, t: model.apply(v, batch_of(t)))(variables, tokens)
  biggest = _largest_intermediate(jaxpr.jaxpr)
  if attention == "full" and impl == "dense":
    assert biggest >= heads * length * length
  else:
    assert biggest < heads * length * length // 4


# ---------------------------------------------------------------------------------------------
# Causality and the shifted VAE decoder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", VARIANTS)
def test_changing_a_later_token_leaves_earlier_logits_unchanged(attention):
  _, _, forward = setup_model("transformer", attention)
  tokens = random_tokens(1)
  changed = tokens.copy()
  changed[:, 20] = (changed[:, 20] + 7) % 770 + 4
  a, b = forward(tokens)["logits"], forward(changed)["logits"]
  # logits[:, j] reads inputs 0..j, so input 20 may only move logits 20 onwards.
  np.testing.assert_allclose(a[:, :20], b[:, :20], atol=1e-5)
  assert np.abs(np.asarray(a[:, 20:]) - np.asarray(b[:, 20:])).max() > 1e-3


def test_vae_outputs_shapes_and_param_groups():
  model, variables, forward = setup_model("vaegan", "hierarchical")
  z = normal(4, (2, 66))
  out = forward(random_tokens(2), z)
  assert out["logits"].shape == (2, T - 1, 774) and out["logits"].dtype == jnp.float32
  for key in ("mu", "logvar", "z"):
    assert out[key].shape == (2, 66) and out[key].dtype == jnp.float32
  assert set(variables["params"]) == {"generator", "discriminator"}
  assert set(variables["params"]["generator"]) == {"decoder", "encoder", "conditioner"}
  levels = tr.latent_levels(model.cfg)
  assert [(s.start, s.stop) for s in levels.values()] == [(0, 22), (22, 44), (44, 66)]


def test_vae_decoder_cannot_see_its_target():
  """With z fixed, the logit that predicts token t+1 must not move when token t+1 does.
  A decoder fed the unshifted targets (the original's bug) fails this."""
  _, _, forward = setup_model("vaegan", "hierarchical")
  tokens = random_tokens(3)
  z = normal(4, (2, 66))
  t = 15
  changed = tokens.copy()
  changed[:, t + 1] = (changed[:, t + 1] + 11) % 770 + 4
  a, b = forward(tokens, z)["logits"], forward(changed, z)["logits"]
  np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
  assert np.abs(np.asarray(a[:, t + 1]) - np.asarray(b[:, t + 1])).max() > 1e-3


def test_vae_z_changes_logits_and_encode_matches_mu():
  model, variables, forward = setup_model("vaegan", "hierarchical")
  tokens = random_tokens(5)
  z = normal(6, (2, 66))
  out = forward(tokens, z)
  for level in tr.latent_levels(model.cfg).values():
    moved = z.copy()
    moved[:, level] += 1.0
    moved = forward(tokens, moved)["logits"]
    assert np.abs(np.asarray(out["logits"] - moved)).max() > 1e-3
  np.testing.assert_allclose(token_sampling.encode(model, variables, tokens), out["mu"], atol=1e-5)


def test_encoder_pools_regions_without_padding():
  cfg = tiny_model().cfg  # latent_span 33
  x = normal(13, (1, 10, 3))
  valid = np.arange(10)[None] < 7  # the last 3 positions are PAD
  pooled = np.asarray(
    jax.jit(lambda x, v: tr.Encoder(cfg).apply({}, x, v, np.arange(10), 8, method="_pool"))(
      x, valid
    )
  )
  # 8 regions over 33 positions: 0-4 -> region 0, 5-8 -> 1, 9 -> 2 (PAD here).
  np.testing.assert_allclose(pooled[0, 0], x[0, :5].mean(0), rtol=1e-5)
  np.testing.assert_allclose(pooled[0, 1], x[0, 5:7].mean(0), rtol=1e-5)
  np.testing.assert_allclose(pooled[0, 2:], 0.0)  # regions without a real token


def test_latent_conditioning_follows_the_regions():
  """Over latent_span = 33 positions the 8 regions hold ~4 positions and the 32 fine regions
  ~1: moving one level of z moves the conditioning alike inside its regions, not across."""
  model, variables, _ = setup_model("vaegan", "hierarchical")
  condition = jax.jit(
    lambda v, z: model.apply(
      v, z, np.arange(T - 1), method=lambda m, z, p: m.generator.conditioner(z, p)
    )
  )
  z = normal(12, (2, 66))
  base = np.asarray(condition(variables, z))

  def delta(level):
    moved = z.copy()
    moved[:, tr.latent_levels(model.cfg)[level]] += 1.0
    return np.asarray(condition(variables, moved)) - base

  same = lambda d, a, b: np.abs(d[:, a] - d[:, b]).max() < 1e-5
  g, r, f = delta("global"), delta("regional"), delta("fine")
  assert same(g, 0, T - 2) and np.abs(g).max() > 1e-3
  assert same(r, 1, 2) and not same(r, 4, 5)  # regions of 33 / 8 positions: 0-4, 5-8, ...
  assert same(f, 0, 1) and not same(f, 1, 2)  # fine regions: 0-1, 2, 3, ...


def test_real_init_and_bfloat16_compute():
  """model.init (the trainer's path) gives float32 params under a bfloat16 compute dtype,
  and the logits come back in float32."""
  model = tiny_model("transformer", "sliding", "bfloat16")
  batch = batch_of(random_tokens(7))
  variables = jax.jit(lambda b: model.init(RNGS, b))(batch)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  logits = jax.jit(lambda v, b: model.apply(v, b)["logits"])(variables, batch)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  assert np.std(np.asarray(logits)) > 0.1  # an initialized model, not zeros


def test_bad_config_names_the_key():
  with pytest.raises(ValueError, match="model.attention"):
    tiny_model(attention="dilated")
  with pytest.raises(ValueError, match="model.d_model"):
    tiny_model(d_model=30)
  with pytest.raises(ValueError, match="model.max_len"):
    jax.eval_shape(lambda b: tiny_model().init(RNGS, b), batch_of(random_tokens(0, (1, 130))))
  config = ml_collections.ConfigDict({"model": dict(TINY, mode="gan")})
  from jaxvae.errors import ConfigError

  with pytest.raises(ConfigError, match="model.mode"):
    mt.validate_model(config)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def uncached_greedy(model, variables, prompt, num_tokens, z=None):
  """Greedy decoding by re-running the whole (causal) decoder on a fixed-size buffer."""
  length = prompt.shape[1] + num_tokens
  run = functools.partial(
    jax.jit(lambda v, buf, z: model.apply(v, buf, z, method="decode_tokens")), variables, z=z
  )
  buf = np.zeros((prompt.shape[0], length), np.int32)
  buf[:, : prompt.shape[1]] = prompt
  for i in range(prompt.shape[1] - 1, length - 1):
    logits = np.array(run(jnp.asarray(buf)))[:, i]
    logits[:, [PAD, START]] = -np.inf
    buf[:, i + 1] = logits.argmax(-1)
  return buf


@pytest.mark.parametrize("attention", (*VARIANTS, "full-unblocked"))
def test_cached_decoding_matches_the_full_forward(attention):
  """Token by token through the key/value cache, every position's logits equal the
  non-cached forward pass (32 positions, 4 windows of 8): the cache respects the window.
  The cache is read in blocks of 8 (`cached_attention`); 'full-unblocked' has blocks of 64
  and max_len 40, so the 32-position cache cannot round up to a block and is read whole."""
  if attention == "full-unblocked":
    model = tiny_model("transformer", "full", attention_block=64, max_len=40)
    variables = quick_init(model, batch_of(random_tokens(0)))
    apply = jax.jit(lambda v, t: model.apply(v, batch_of(t), train=False))
    forward = lambda tokens: apply(variables, tokens)
  else:
    model, variables, forward = setup_model("transformer", attention)
  tokens = random_tokens(16)
  want = np.asarray(forward(tokens)["logits"])
  step = jax.jit(functools.partial(token_sampling.decode_step, model))
  cache = token_sampling.init_cache(model, 2, T - 1)
  blocks = model.cfg.attention_block
  assert (jax.tree.leaves(cache)[0].shape[2] % blocks != 0) == (attention == "full-unblocked")
  for i in range(T - 1):
    logits, cache = step(variables["params"], cache, jnp.asarray(tokens[:, i : i + 1]))
    np.testing.assert_allclose(logits[:, 0], want[:, i], atol=2e-4, rtol=1e-4)


def test_cached_greedy_equals_uncached_greedy():
  model, variables, _ = setup_model("transformer", "hierarchical")
  prompt = random_tokens(8, (2, 3))
  got = token_sampling.generate(
    model, variables, rkey(0), num_tokens=17, batch_size=2, temperature=0.0, prompt=prompt
  )
  want = uncached_greedy(model, variables, prompt, 17)  # 20 positions > window 8
  np.testing.assert_array_equal(got, want)


def test_cached_greedy_from_a_given_z():
  model, variables, _ = setup_model("vaegan", "hierarchical")
  prompt = np.full((2, 1), START, np.int32)
  z = normal(9, (2, 66))
  greedy = token_sampling.generate(
    model, variables, rkey(0), num_tokens=12, batch_size=2, temperature=0.0, z=z
  )
  np.testing.assert_array_equal(greedy, uncached_greedy(model, variables, prompt, 12, z))


def test_sampled_ids_are_in_range_and_respect_prompt():
  model, variables, _ = setup_model("transformer", "hierarchical")
  prompt = random_tokens(10, (1, 3))[0]  # shared by the batch; shapes of the greedy test
  out = np.asarray(
    token_sampling.generate(
      model, variables, rkey(1), num_tokens=17, batch_size=2, top_p=0.9, prompt=prompt
    )
  )
  assert out.shape == (2, 20)
  np.testing.assert_array_equal(out[:, :3], np.broadcast_to(prompt, (2, 3)))
  new = out[:, 3:]
  assert new.min() > START and new.max() < 774
  assert len(np.unique(new)) > 10  # sampling, not a constant
  with pytest.raises(ValueError, match="max_len"):
    token_sampling.generate(model, variables, rkey(1), num_tokens=200)


def test_sample_logits_filters():
  logits = np.log(np.array([[0.0, 0.0, 0.5, 0.3, 0.15, 0.05]], np.float32) + 1e-9)
  keys = jax.random.split(rkey(0), 64)
  draws = jax.jit(
    jax.vmap(
      lambda k, t, p, top_k: token_sampling.sample_logits(logits, k, t, top_k, p)[0],
      in_axes=(0, None, None, None),
    ),
    static_argnums=3,
  )
  draw = lambda t=1.0, p=1.0, k=0: set(np.asarray(draws(keys, t, p, k)).tolist())
  assert draw(k=2) == {2, 3}
  assert draw(p=0.7) == {2, 3}  # 0.5 alone < 0.7, 0.5 + 0.3 covers it
  assert len(draw()) > 2  # PAD and START (ids 0, 1) have no mass: 2..5 remain
  assert draw(t=0.0) == {2}


def test_the_nucleus_without_a_sort_equals_its_definition():
  """Each token is kept when the tokens more likely than it hold less than top_p of the mass
  (brute force in float64), on peaked, flat and tied rows."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 300)).astype(np.float32) * np.array(
    [[0.3], [1], [2], [4], [8], [1]]
  )
  logits[5, :60] = logits[5, 0]  # 60 tied tokens
  probs = np.asarray(jax.nn.softmax(logits, -1))
  nucleus = jax.jit(token_sampling.nucleus)
  for top_p in (0.05, 0.5, 0.9, 0.95, 0.999):
    above = (probs[:, None, :] * (probs[:, None, :] > probs[:, :, None])).sum(-1, dtype=np.float64)
    np.testing.assert_array_equal(np.asarray(nucleus(probs, top_p)), above < top_p, err_msg=top_p)


def test_top_k_one_is_greedy():
  logits = normal(1, (16, 774))
  sample = jax.jit(token_sampling.sample_logits, static_argnames="top_k")
  greedy = sample(logits, rkey(2), temperature=0.0)
  np.testing.assert_array_equal(sample(logits, rkey(3), top_k=1), greedy)
  assert not np.isin(np.asarray(greedy), [PAD, START]).any()


# ---------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------


def objective_config(free_bits=0.0, **objective):
  return ml_collections.ConfigDict(
    {
      "model": dict(TINY, mode="vaegan"),
      "kl": {"free_bits": free_bits, "beta_end": 0.1},
      "objective": dict(
        {
          "adv_weight": 0.2,
          "adv_weight_start": 0.05,
          "adv_ramp_steps": 10,
          "r1_weight": 1.0,
          "fm_weight": 1.0,
          "gan_loss": "hinge",
        },
        **objective,
      ),
    }
  )


def test_lm_objective_scores_shifted_targets_and_skips_padding():
  config = objective_config()
  objective = jax.jit(
    lambda logits, batch: mt.lm_objective({"logits": logits}, batch, kl_weight=0.0, config=config)
  )
  tokens = random_tokens(11, (3, T))
  tokens[1, 25:] = PAD
  one_hot = 30.0 * np.eye(774, dtype=np.float32)
  shifted = one_hot[tokens[:, 1:]]
  loss, m = objective(shifted, batch_of(tokens))
  assert float(m["accuracy"]) == 1.0 and float(m["nll"]) < 1e-6
  assert abs(float(m["ppl"]) - 1.0) < 1e-5 and float(loss) == float(m["nll"])
  # Scored against the inputs instead of the next tokens, the same logits are wrong.
  _, m_bad = objective(one_hot[tokens[:, :-1]], batch_of(tokens))
  assert float(m_bad["accuracy"]) < 0.1
  # Garbage at PAD targets and in a masked-out example does not count.
  noisy = np.array(shifted)
  noisy[1, 24:] = normal(0, (8, 774))
  noisy[2] = normal(1, (T - 1, 774))
  loss, m2 = objective(noisy, batch_of(tokens, [1, 1, 0]))
  assert float(m2["accuracy"]) == 1.0 and float(loss) < 1e-6
  _, m3 = objective(noisy, batch_of(tokens))  # control: the garbage does count when real
  assert float(m3["accuracy"]) < 0.8


def test_vae_objective_kl_free_bits_and_levels():
  tokens = random_tokens(13)
  logits = np.zeros((2, T - 1, 774), np.float32)
  mu = np.zeros((2, 66), np.float32)
  mu[:, 0] = 2.0  # KL 2 nats in one global dimension
  outputs = {"logits": logits, "mu": mu, "logvar": np.zeros((2, 66), np.float32)}
  config = objective_config(free_bits=0.1)
  loss, m = jax.jit(lambda o, b: mt.vae_objective(o, b, kl_weight=0.5, config=config))(
    outputs, batch_of(tokens)
  )
  np.testing.assert_allclose(m["nll"], np.log(774), rtol=1e-5)
  np.testing.assert_allclose(m["kl"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(m["kl_global"], 2.0, rtol=1e-6)
  assert float(m["kl_fine"]) == 0.0
  # Free bits: 65 dims below 0.1 nats count as 0.1 each; per token over 32 targets.
  np.testing.assert_allclose(loss, np.log(774) + 0.5 * (2.0 + 65 * 0.1) / 32, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# GAN
# ---------------------------------------------------------------------------------------------


def test_gan_losses_by_hand():
  real = [{"logits": np.array([2.0, 0.5], np.float32)}]
  fake = [{"logits": np.array([-2.0, 0.0], np.float32)}]
  d_loss = jax.jit(adversarial.discriminator_loss, static_argnames="kind")
  np.testing.assert_allclose(d_loss(real, fake), 0.25 + 0.5)
  np.testing.assert_allclose(jax.jit(adversarial.generator_adv_loss)(fake), 1.0)
  np.testing.assert_allclose(
    d_loss(real, fake, kind="ns"),
    np.mean(np.log1p(np.exp([-2.0, -0.5]))) + np.mean(np.log1p(np.exp([-2.0, 0.0]))),
    rtol=1e-6,
  )
  w = normal(0, (3, 5))
  linear = lambda x: [{"logits": jnp.sum(x * w, axis=(1, 2))}]
  r1 = jax.jit(lambda x: adversarial.r1_penalty(linear, x))(np.ones((4, 3, 5), np.float32))
  np.testing.assert_allclose(r1, 0.5 * np.sum(np.square(w)), rtol=1e-5)
  feats = [{"features": [np.ones((2, 4, 3), np.float32)]}]
  assert float(jax.jit(adversarial.feature_matching_loss)(feats, feats)) == 0.0


def test_adversarial_gradient_reaches_generator_parameters():
  """d(adversarial loss)/d(generator params) through the straight-through Gumbel sample is
  non-zero; the original's way (the discriminator sees argmax ids) gives exactly zero."""
  model, variables, _ = setup_model("vaegan", "hierarchical")
  disc_params = variables["params"]["discriminator"]
  batch = batch_of(random_tokens(14))
  config = objective_config()

  def adv(logits, hard_ids=False):
    if hard_ids:
      outs = model.apply(
        variables, jax.nn.one_hot(jnp.argmax(logits, -1), 774), method="discriminate"
      )
      return adversarial.generator_adv_loss(outs, batch["mask"])
    return mt.adversarial_terms(model, disc_params, logits, batch, rkey(3), config)[0]

  logits = normal(4, (2, T - 1, 774))
  by_logits = jax.jit(jax.grad(adv), static_argnums=1)
  assert max_abs(by_logits(logits, False)) > 0
  assert max_abs(by_logits(logits, True)) == 0.0

  # Through a whole generator: a decoder-only LM here, whose logits take the same path
  # (logits -> fake -> discriminator) as in `generator_terms`, and which compiles faster.
  lm, lm_variables, _ = setup_model("transformer", "hierarchical")
  by_params = jax.jit(jax.grad(lambda p: adv(lm.apply({"params": p}, batch)["logits"])))
  assert max_abs(by_params(lm_variables["params"])) > 1e-6


def test_discriminator_outputs_per_scale():
  model, variables, _ = setup_model("vaegan", "hierarchical")
  mask = np.ones((2, T - 1), np.float32)
  mask[1, 20:] = 0.0
  outs = jax.jit(lambda v, x, m: model.apply(v, x, m, method="discriminate"))(
    variables, np.full((2, T - 1, 774), 1.0 / 774, np.float32), mask
  )
  assert len(outs) == 3
  for out in outs:
    assert out["logits"].shape == (2,) and len(out["features"]) == TINY["disc_layers"]
  assert outs[2]["features"][0].shape == (2, 8, TINY["disc_dim"])  # 32 steps pooled by 4


def test_vaegan_step_updates_both_sides():
  model, variables, _ = setup_model("vaegan", "hierarchical")
  params = variables["params"]
  config = objective_config(free_bits=0.05)
  tx_gen, tx_disc = optax.sgd(1e-2), optax.sgd(1e-2)  # the step is agnostic; sgd compiles fast
  state = mt.init_vaegan_state(params, tx_gen, tx_disc)
  step = jax.jit(mt.vaegan_train_step(model, tx_gen, tx_disc, config, kl_fn=lambda s: 0.1))
  batch = batch_of(random_tokens(15), [1.0, 0.0])
  new, metrics = step(state, batch, rkey(0))
  new, metrics = step(new, batch, rkey(0))
  assert int(new["step"]) == 2
  shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)
  assert shapes(new) == shapes(state)
  for key in (
    "loss",
    "nll",
    "ppl",
    "accuracy",
    "kl",
    "adv_g",
    "fm",
    "loss_d",
    "r1",
    "d_real",
    "d_fake",
    "grad_norm_g",
    "grad_norm_d",
  ):
    assert np.isfinite(float(metrics[key])), key
  np.testing.assert_allclose(metrics["adv_weight"], 0.05 + 0.15 * 1 / 10, rtol=1e-6)
  assert float(metrics["d_real"]) != float(metrics["d_fake"])  # it sees the samples
  for side in ("generator", "discriminator"):
    moved = jax.tree.map(
      lambda a, b: np.asarray(a) - np.asarray(b), new["params"][side], params[side]
    )
    assert max_abs(moved) > 0, side
  labels = tr.param_labels(params)  # for one optax.multi_transform instead of two optimizers
  assert set(jax.tree.leaves(labels["discriminator"])) == {"discriminator"}
  assert set(jax.tree.leaves(labels["generator"])) == {"generator"}
