"""The exceptions relief_torch raises. All derive from :class:`ReliefTorchError` (a
``ValueError``), and every message says what was found and what was expected.

Messages quote what the user gave (names, values, metadata) through :func:`cut` and
:func:`names`, so that a huge input (a megabyte of JSON in a metadata field, a checkpoint with
ten thousand stray tensors) gives a message of readable length; as a last resort the message of
any relief_torch error is kept below :data:`MESSAGE_LIMIT` characters.
"""

from typing import Any, Iterable

#: The longest quote of one user-supplied value (a name, a value, an exception text).
QUOTE_LIMIT = 200
#: The most names one list in a message shows.
NAMES_LIMIT = 20
#: The longest message of any relief_torch error.
MESSAGE_LIMIT = 8000


def cut(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters, with an ellipsis and the full length when cut."""
    s = value if isinstance(value, str) else str(value)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s)} characters)"


def oneline(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``str(value)`` on one line (runs of whitespace, newlines included, become one space), cut
    to ``limit`` characters: for quoting the text of an exception raised by other code."""
    return cut(" ".join(str(value).split()), limit)


def shown(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (for values whose type matters: ``'3'`` vs ``3``)."""
    return cut(repr(value), limit)


def names(items: Iterable[Any], limit: int = NAMES_LIMIT) -> str:
    """```a`, `b`, ...``: each name cut, at most ``limit`` of them, then how many more."""
    items = list(items)
    out = ", ".join(f"`{cut(n)}`" for n in items[:limit])
    if len(items) > limit:
        out += f" and {len(items) - limit} more"
    return out


class ReliefTorchError(ValueError):
    """Base class of every relief_torch error."""

    def __init__(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > MESSAGE_LIMIT:
            args = (cut(args[0], MESSAGE_LIMIT),)
        super().__init__(*args)


class ExportError(ReliefTorchError):
    """A module (or its weights) cannot be described as a relief model spec."""


class CheckpointError(ReliefTorchError):
    """A relief checkpoint does not fit the module it is loaded into (nothing was changed)."""


class CompactedError(ReliefTorchError):
    """A file is not a readable compacted relief model (``relief export --compact``)."""
