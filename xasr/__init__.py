"""xasr: cross-lingual transfer learning for end-to-end speech recognition.

The front door (``xasr.api``): ``load_model``, ``transcribe``, ``evaluate``, ``train_model``,
``transfer_model``. Each imports what it needs when called: ``import xasr`` stays light.
"""

from xasr.api import evaluate, load_model, train_model, transcribe, transfer_model
from xasr.errors import XasrError
from xasr.version import __version__

__all__ = [
    "XasrError",
    "__version__",
    "evaluate",
    "load_model",
    "train_model",
    "transcribe",
    "transfer_model",
]
