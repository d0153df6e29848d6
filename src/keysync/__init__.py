"""keysync: keep Coder's AI Gateway keys equal to a manifest in git."""

from keysync import moved as _moved

__version__ = "0.1.0"

_moved.install()
