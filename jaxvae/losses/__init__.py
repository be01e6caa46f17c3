"""Loss math: functions of arrays, no config, no registry (the way optax's `losses/` reads).

Every function computes in float32 whatever the model's compute dtype. Per-example terms
return `[B]`; `reduce.masked_mean` averages them over the real examples of a batch. The
objectives that read a config and combine these terms live with their family in
`jaxvae.variants`.
"""
