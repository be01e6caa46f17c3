"""Benchmarks that are not part of the library: reference implementations to time against.

Nothing in `jaxvae` imports this package; `torch_ref` needs the optional `bench` extra.
"""
