"""The builder's one failure type: the deployer catches it and rejects the push."""

from __future__ import annotations

from dockyard.errors import DockyardError


class BuildFailed(DockyardError):
    """The revision could not be turned into an image; any build output already streamed."""
