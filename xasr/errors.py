"""The one error family a user can cause: each message says what, where, and how to fix it."""


class XasrError(Exception):
    """Bad input or a bad request: a message for the user, not a traceback."""


class DataError(XasrError):
    """A manifest, audio file or transcript that cannot be used; ``reason``, where given, is
    the short name ``--skip-bad`` counts it under ("does not exist", "not finite", ...)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class Interrupted(XasrError):
    """The user stopped a run (Ctrl-C); it can be resumed."""


class CheckpointError(XasrError):
    """A checkpoint that is missing, corrupt, or of another architecture."""
