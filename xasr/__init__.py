"""xasr: cross-lingual transfer learning for end-to-end speech recognition."""

from xasr.errors import XasrError

__all__ = ["XasrError"]
__version__ = "0.1.0"
