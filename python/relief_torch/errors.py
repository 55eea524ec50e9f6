"""The exceptions relief_torch raises. All derive from :class:`ReliefTorchError` (a
``ValueError``), and every message says what was found and what was expected."""


class ReliefTorchError(ValueError):
    """Base class of every relief_torch error."""


class ExportError(ReliefTorchError):
    """A module (or its weights) cannot be described as a relief model spec."""


class CheckpointError(ReliefTorchError):
    """A relief checkpoint does not fit the module it is loaded into (nothing was changed)."""


class CompactedError(ReliefTorchError):
    """A file is not a readable compacted relief model (``relief export --compact``)."""
