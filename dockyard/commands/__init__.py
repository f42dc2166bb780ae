"""The core's own command groups, one module each."""

from dockyard.commands import (  # noqa: F401  (registration)
    acl,
    apps,
    backup,
    config,
    doctor,
    events,
    help,
    init,
    keys,
)
