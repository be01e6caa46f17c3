"""PyTorch twin of the seed-001 music transformer at stage 1 (the causal LM).

Mirrors `jaxvae.models.transformer` (mode 'transformer', attention 'full'): token embedding
(774 x 256, std d^-1/2, times sqrt(d)) plus sinusoidal positions, dropout 0.1, 4 pre-LN blocks
(4-head causal self-attention with biased q/k/v/out projections, GELU MLP 256 -> 1024 -> 256,
residual dropout), a final LayerNorm and logits tied to the embedding: 3,357,696 parameters.
Next-token cross entropy over tokens[:, 1:] from tokens[:, :-1], PAD (id 0) ignored, as
`jaxvae.variants.music_transformer.lm_objective`.
Attention is `F.scaled_dot_product_attention(is_causal=True)`, PyTorch's fused kernel.
`generate` samples with a key/value cache, one token per step (the benchmark's sampling
reference).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from jaxvae.symbolic import tokenizers

PAD = 0
_LN_EPS = 1e-6  # flax LayerNorm's default


def sinusoidal(length: int, d: int) -> torch.Tensor:
  """[T, d] sine / cosine codes, laid out like `jaxvae.models.transformer.sinusoidal`."""
  freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2).float() / d)
  angle = torch.arange(length).float()[:, None] * freq[None]
  return torch.cat([torch.sin(angle), torch.cos(angle)], -1)[:, :d]


class Block(nn.Module):
  """Pre-LN block: causal multi-head attention and a GELU MLP, each with residual dropout."""

  def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float):
    super().__init__()
    self.num_heads = num_heads
    self.ln1 = nn.LayerNorm(d_model, eps=_LN_EPS)
    self.query = nn.Linear(d_model, d_model)
    self.key = nn.Linear(d_model, d_model)
    self.value = nn.Linear(d_model, d_model)
    self.out = nn.Linear(d_model, d_model)
    self.ln2 = nn.LayerNorm(d_model, eps=_LN_EPS)
    self.ff1 = nn.Linear(d_model, d_ff)
    self.ff2 = nn.Linear(d_ff, d_model)
    self.drop = nn.Dropout(dropout)

  def _heads(self, x: torch.Tensor) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)

  def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], i: int):
    """One position x [B, 1, d] at index i, its key and value written into `cache` ([B, H,
    length, d / H] each): attention over positions 0..i, no mask needed."""
    h = self.ln1(x)
    q, k, v = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
    keys, values = cache
    keys[:, :, i : i + 1] = k
    values[:, :, i : i + 1] = v
    a = F.scaled_dot_product_attention(q, keys[:, :, : i + 1], values[:, :, : i + 1])
    x = x + self.out(a.transpose(1, 2).reshape(x.shape))
    return x + self.ff2(F.gelu(self.ff1(self.ln2(x)), approximate="tanh"))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.ln1(x)
    q, k, v = self._heads(self.query(h)), self._heads(self.key(h)), self._heads(self.value(h))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.drop(self.out(a.transpose(1, 2).reshape(x.shape)))
    h = self.ff2(F.gelu(self.ff1(self.ln2(x)), approximate="tanh"))  # flax nn.gelu is tanh
    return x + self.drop(h)


class MusicTransformer(nn.Module):
  """`forward(tokens [B, T] int64) -> logits [B, T, V]` (unshifted; the loss shifts)."""

  def __init__(
    self,
    vocab_size=774,
    d_model=256,
    num_layers=4,
    num_heads=4,
    d_ff=1024,
    dropout=0.1,
    max_len=2048,
  ):
    super().__init__()
    self.d_model = d_model
    self.embed = nn.Embedding(vocab_size, d_model)
    nn.init.normal_(self.embed.weight, std=d_model**-0.5)
    self.register_buffer("positions", sinusoidal(max_len, d_model), persistent=False)
    self.drop = nn.Dropout(dropout)
    self.blocks = nn.ModuleList(Block(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
    self.norm = nn.LayerNorm(d_model, eps=_LN_EPS)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.shape[1]]
    x = self.drop(x)
    for block in self.blocks:
      x = block(x)
    return (self.norm(x) @ self.embed.weight.t()).float()


@torch.no_grad()
def generate(model: MusicTransformer, num_tokens: int, batch_size: int, top_p: float = 0.95):
  """KV-cached nucleus sampling, one token per step, as `jaxvae.sampling.tokens.generate`
  does it (START first; PAD and START never drawn; temperature 1): int64 [B, 1 + num_tokens].
  Keys and values go into caches preallocated for the whole length, one per block."""
  model.eval()
  weight = model.embed.weight
  heads = model.blocks[0].num_heads
  shape = (batch_size, heads, num_tokens + 1, model.d_model // heads)
  caches = [(weight.new_zeros(shape), weight.new_zeros(shape)) for _ in model.blocks]
  token = torch.full((batch_size, 1), tokenizers.START, dtype=torch.long, device=weight.device)
  out = [token]
  for i in range(num_tokens):
    x = model.embed(token) * math.sqrt(model.d_model) + model.positions[i : i + 1]
    for block, cache in zip(model.blocks, caches):
      x = block.step(x, cache, i)
    logits = (model.norm(x[:, 0]) @ weight.t()).float()
    logits[:, [PAD, tokenizers.START]] = -math.inf
    ordered, order = torch.sort(logits, -1, descending=True)
    probs = torch.softmax(ordered, -1)
    keep = torch.cumsum(probs, -1) - probs < top_p  # the nucleus; the top token always
    probs = torch.where(keep, probs, torch.zeros_like(probs))
    token = order.gather(-1, torch.multinomial(probs, 1))
    out.append(token)
  return torch.cat(out, 1)


def next_token_loss(model: MusicTransformer, batch: dict) -> torch.Tensor:
  tokens = batch["tokens"]
  logits = model(tokens[:, :-1])
  return F.cross_entropy(
    logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD
  )


def build(config, input_shape):
  """(model, loss_fn) from a music_transformer config at stage 1 (the causal LM)."""
  m = config.model
  if (
    int(config.get("stage", 1)) != 1
    or m.get("attention", "full") != "full"
    or m.get("positions", "sinusoidal") != "sinusoidal"
  ):
    raise NotImplementedError(
      "the torch transformer reference covers stage 1 (causal LM) with "
      "full attention and sinusoidal positions only"
    )
  max_len = max(int(m.max_len), int(input_shape[-1]))
  vocab = int(m.vocab_size) or tokenizers.from_config(config.data.midi).planned_vocab_size
  model = MusicTransformer(
    vocab,
    int(m.d_model),
    int(m.num_layers),
    int(m.num_heads),
    int(m.d_ff),
    float(m.dropout),
    max_len,
  )
  return model, next_token_loss
