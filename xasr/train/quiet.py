"""Third-party noise a training run's output should not carry (issue: quiet logs).

Both filters match one message each, so every other warning and info line still shows:

* Lightning's advertisement for its cloud logger, logged at the start of every run;
* Lightning 2.6's own use of ``torch.utils._pytree.LeafSpec``, which torch 2.13 deprecates
  (raised inside Lightning on every step's output, nothing a user can act on).
"""

from __future__ import annotations

import logging
import warnings

_ADVERT = "litlogger"
_LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _ADVERT not in record.getMessage()


_FILTER = _DropAdvert()


def quiet_third_party() -> None:
    """Install both filters (idempotent)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=_LEAFSPEC)
