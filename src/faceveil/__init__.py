"""faceveil: secure, reversible face anonymization with diffusion models.

The public entry points are :func:`faceveil.api.anonymize`, :func:`faceveil.api.recover`
and :func:`faceveil.api.inspect`, with keys from :class:`faceveil.keys.KeySource`.
"""

__version__ = "0.1.0"
