"""xasr: cross-lingual transfer learning for end-to-end speech recognition.

The front door (``xasr.api``): ``load_model``, ``transcribe``, ``evaluate``, ``train_model``,
``transfer_model``. Each imports what it needs when called: ``import xasr`` stays light.
"""

__version__ = "0.1.0"

from xasr.api import evaluate, load_model, train_model, transcribe, transfer_model
from xasr.errors import XasrError

__all__ = [
    "XasrError",
    "evaluate",
    "load_model",
    "train_model",
    "transcribe",
    "transfer_model",
]
