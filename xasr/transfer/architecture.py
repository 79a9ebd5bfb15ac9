"""The architecture a transfer asks for (``--arch``/``--size``), resolved against its source.

``TransferOptions.expect`` holds the answer: None keeps the source's architecture; a config of
the source's family must equal the source's (``target_config`` checks it); a config of another
family is the target's, and takes from the source what matches (``xasr.transfer.plan``).
"""

from __future__ import annotations

from pathlib import Path

from xasr.config import ARCH_FLAGS, SIZES, AedConfig, ModelConfig
from xasr.errors import XasrError
from xasr.models.build import model_config, read_model_config, resolve_model
from xasr.models.pretrained import foreign_kind


def requested_architecture(
    source: str | Path | None, arch: str | None = None, size: str | None = None
) -> ModelConfig | AedConfig | None:
    """The architecture ``arch`` (an ``ARCH_FLAGS`` name: ctc, aed) and ``size`` (a name of
    ``SIZES``) ask of a transfer from ``source``: None for the source's own. A ``size`` alone
    names a size of the source's family; an ``arch`` alone of another family takes the
    source's size name there (small where the source has none). Without a source (training
    from scratch), the named config, small and ctc by default.

    Raises ``XasrError`` for a pretrained encoder (it keeps its own architecture) and for
    unknown names."""
    if arch is None and size is None:
        return None
    if source is None:  # from scratch: nothing to resolve against
        return model_config(size or "small", arch or "ctc")
    directory = resolve_model(source)
    if foreign_kind(directory) or read_model_config(directory)[0].architecture == "pretrained-ctc":
        raise XasrError(
            f"--arch/--size: {source} is a pretrained encoder, which keeps its own "
            "architecture; drop --arch/--size"
        )
    source_cfg = read_model_config(directory)[0]
    family = next(flag for flag, name in ARCH_FLAGS.items() if name == source_cfg.architecture)
    arch = arch or family
    if size is None and arch == family:
        return None
    names = [n for n, cfg in SIZES[source_cfg.architecture].items() if cfg == source_cfg]
    return model_config(size or (names[0] if names else "small"), arch)
