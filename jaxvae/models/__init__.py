"""Flax Linen models, one family per module."""
