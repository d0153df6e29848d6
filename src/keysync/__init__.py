"""keysync: keep Coder's AI Gateway keys equal to a manifest in git."""

__version__ = "0.1.0"
