"""Errors with a user-facing message.

Every refusal is one of these; the command dispatcher turns it into ` !     message` on
stderr and a non-zero exit status in exactly one place (`dockyard.registry.dispatch`).
"""

from __future__ import annotations


class DockyardError(Exception):
    """A failure the user should read. `message` is shown verbatim after ` !     `."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DockyardError):
    """Bad arguments: wrong count, unknown flag, malformed value."""


class NotFound(DockyardError):
    """A named thing does not exist. Dokku exits 20 for a missing app; so do we."""

    exit_code = 20


class AccessDenied(DockyardError):
    """The authenticated key may not do this."""

    exit_code = 13


class Conflict(DockyardError):
    """The request clashes with existing state (name taken, duplicate key)."""
