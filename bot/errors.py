"""Errors the engine reports to users as one clear line.

Every error a user can cause (bad input, unknown image, unreachable registry) is a
``DockwiseError``; its ``str()`` is the one-line message shown in chat or on the terminal.
Anything else is a bug and is reported generically, never with a traceback in chat.
"""

from __future__ import annotations


class DockwiseError(Exception):
    """A failure with a message fit for the user. ``kind`` names the class of failure."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(DockwiseError):
    kind = "invalid_input"


class InvalidReference(InvalidInput):
    kind = "invalid_reference"


class ImageNotFound(DockwiseError):
    kind = "not_found"


class Unauthorized(DockwiseError):
    kind = "unauthorized"


class Unreachable(DockwiseError):
    kind = "unreachable"


class ContentError(DockwiseError):
    """The registry or image sent something malformed, oversized or not matching its digest."""

    kind = "bad_content"


class Forbidden(DockwiseError):
    """A request dockwise refuses to make (policy: SSRF guard, allowlist)."""

    kind = "forbidden"


class Busy(DockwiseError):
    kind = "busy"


class TimedOut(DockwiseError):
    kind = "timeout"
