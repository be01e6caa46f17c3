"""Seed-001 symbolic Transformer-VAE-GAN on MIDI tokens (the seed's 774 event ids or MidiTok's).

Progressive training, each stage in its own workdir, initialized from the previous one:

  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt1 --config.stage=1
  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt2 --config.stage=2 --config.init_from=/tmp/mt1
  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt3 --config.stage=3 --config.init_from=/tmp/mt2
  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt3 --config.stage=3 --mode=generate --num_samples=2
  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt3 --config.stage=3 --mode=generate --interpolate=a.mid,b.mid
  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/mt3 --config.stage=3 --mode=eval

Generation: `--mode=generate` writes DIR/generate/sample_XX.mid (prior samples in stages 2
and 3); with `--interpolate=a.mid,b.mid` (stages 2 and 3) it encodes the first window of each
file, decodes generate.interpolation_steps latents on the line between them to
DIR/generate/interp_XX.mid and describes the endpoints in interp.json. `--mode=eval` writes
DIR/eval/metrics.json: validation token NLL / perplexity, and statistics (pitch-class
histogram, note density, polyphony, pitch range, note length) of eval.num_generated generated
pieces against the validation windows, with their distances (jaxvae/symbolic/stats.py).

Stage 1: decoder-only causal transformer; 2: hierarchical-latent VAE (66 = 3 x 22), KL
annealed with free bits; 3: VAE-GAN with a multi-scale discriminator on Gumbel-softmax token
distributions, feature matching and R1. Attention: model.attention = full | sliding |
hierarchical; full attention computes each block of model.attention_block queries against
its keys' prefix (model.attention_impl=prefix, the default), as masked T x T scores (dense),
only the causal blocks with an online softmax (blockwise: no T x T matrix), or through
jax.nn.dot_product_attention (dpa: cuDNN's fused kernel on a GPU in bfloat16).
Data: the built-in corpus is music21's Bach chorales (data.layout=chorales);
your MIDI folder with --config.data.layout=folder --config.data.root=DIR, or MAESTRO with
data.layout=maestro. Presets: '' (the original's size: d_model 256, 4 layers, 4 heads, seq 512
with overlap 128), quick_test, speed_test (seq 2048, sliding attention), high_quality,
small (2-core CPU).

Tokenization (data.midi.tokenizer): 'events' (the seed's 774 ids, the default), or MidiTok's
'remi', 'tsd', 'midi_like' with data.midi.miditok.* (beat_res positions per beat,
num_velocities, tempos / num_tempos, programs, drums) and, with data.midi.vocab_size > the base
vocabulary, a BPE vocabulary (data.midi.vocab_model=Unigram for Unigram) learned on the training
split:

  python -m jaxvae.main --config=configs/music_transformer_vaegan.py:small \\
      --workdir=/tmp/remi --config.stage=2 --config.data.midi.tokenizer=remi \\
      --config.data.midi.vocab_size=1000 --config.data.midi.window_start=bar

model.vocab_size = 0 follows the tokenizer. data.midi.window_start=bar starts windows on bar
lines (MusicVAE). The store and the run keep the trained vocabulary; a workdir resumed, evaluated
or initialized from with another tokenizer is one clear error. experiments/compare_tokenizers.py
compares them on the same music.

Augmentation: extra copies of each training piece (validation is never augmented), each one
transformation of the original, as Music Transformer does: transposed by -2, -1, +1, +2
semitones (data.midi.transpose), time-stretched by 0.95 and 1.05 (data.midi.tempo_stretch;
> 1 is slower), and one copy (data.midi.velocity_copies) with every VELOCITY token moved by
up to 1 bin of 4 (data.midi.velocity_jitter; seeded by data.midi.augment_seed): 8 windows
per training window. The `small` preset turns all of them off.
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  config.stage = 1
  config.model.name = "music_transformer"
  config.model.stage = config.get_ref("stage")
  config.model.vocab_size = 0  # the tokenizer's: 774 for data.midi.tokenizer=events
  config.model.d_model = 256
  config.model.num_layers = 4
  config.model.num_heads = 4
  config.model.d_ff = 1024
  config.model.dropout = 0.1
  config.model.max_len = 2048
  config.model.positions = "sinusoidal"
  config.model.attention = "full"
  # Full causal attention as masked T x T scores ('dense'), each block of attention_block
  # queries against its keys' prefix ('prefix': 5/8 of dense's FLOPs at 4 blocks, the
  # fastest on the 2-core CPU, +11 % a step at seq 512; BUILD_NOTES.md), only the allowed
  # blocks with an online softmax ('blockwise': no T x T matrix, least memory), or
  # jax.nn.dot_product_attention ('dpa': cuDNN's fused kernel on a GPU in bfloat16).
  # All equal up to float rounding. attention_block also sizes the blocks a KV-cached
  # sampling step reads.
  config.model.attention_impl = "prefix"
  config.model.attention_block = 128
  config.model.window = 128
  config.model.global_stride = 64
  config.model.enc_layers = 2
  config.model.latent_global = 22
  config.model.latent_regional = 22
  config.model.latent_fine = 22
  config.model.latent_regions = 8
  config.model.latent_fine_regions = 32
  config.model.disc_scales = (1, 2, 4)
  config.model.disc_dim = 128
  config.model.disc_layers = 3
  config.model.gumbel_tau = 1.0

  config.objective.kl_scale = "per_token"
  config.objective.adv_weight_start = 0.05
  config.objective.adv_weight = 0.2
  config.objective.adv_ramp_steps = 2000
  config.objective.fm_weight = 1.0
  config.objective.r1_weight = 1.0
  config.objective.gan_loss = "hinge"
  config.objective.disc_lr_scale = 1.0

  config.kl.schedule = "linear"
  config.kl.beta_start = 0.0
  config.kl.beta_end = 0.1
  config.kl.epochs = 10.0
  config.kl.free_bits = 0.1

  config.data.kind = "midi"
  config.data.layout = "chorales"
  config.data.midi.seq_len = 512
  config.data.midi.overlap = 128
  config.data.midi.transpose = (-2, -1, 1, 2)
  config.data.midi.tempo_stretch = (0.95, 1.05)
  config.data.midi.velocity_jitter = 1
  config.data.midi.velocity_copies = 1
  config.data.val_fraction = 0.1

  config.train.epochs = 50
  config.train.batch_size = 16
  config.train.lr = 3e-4
  config.train.lr_schedule = "warmup_cosine"
  config.train.warmup_steps = 500
  config.train.clip_norm = 1.0
  config.train.patience = 10
  config.train.image_every_epochs = 0

  base.apply_preset(
    config,
    arg,
    {
      "quick_test": {
        "data.midi.chorales": 40,
        "train.epochs": 3,
        "train.warmup_steps": 20,
        "model.num_layers": 2,
        "model.d_model": 128,
        "model.num_heads": 4,
        "model.d_ff": 512,
      },
      "speed_test": {
        "data.midi.seq_len": 2048,
        "data.midi.overlap": 256,
        "model.attention": "sliding",
        "model.window": 256,
        "train.epochs": 2,
      },
      "high_quality": {
        "model.d_model": 512,
        "model.num_layers": 8,
        "model.num_heads": 8,
        "model.d_ff": 2048,
        "model.attention": "hierarchical",
        "data.midi.seq_len": 1024,
        "data.midi.overlap": 256,
        "train.epochs": 200,
        "train.batch_size": 32,
      },
      "small": {
        "data.midi.chorales": 24,
        "data.midi.seq_len": 128,
        "data.midi.overlap": 32,
        "data.midi.transpose": (),
        "data.midi.tempo_stretch": (),
        "data.midi.velocity_jitter": 0,
        "model.d_model": 64,
        "model.num_layers": 2,
        "model.num_heads": 4,
        "model.d_ff": 128,
        "model.enc_layers": 1,
        "model.disc_dim": 32,
        "model.disc_layers": 1,
        "train.epochs": 4,
        "train.batch_size": 8,
        "train.warmup_steps": 10,
        "train.log_every_steps": 5,
        "kl.epochs": 2.0,
      },
    },
  )
  return config.lock()
