"""decoders: every decoder family of the literature as pure-function Flax modules.

The library needs only jax, flax and numpy; the experiment harness lives in
`experiments/` and is never imported from here.
"""
from decoders.errors import ConfigError

__all__ = ["ConfigError"]
