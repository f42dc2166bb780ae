"""The core's own command groups, one module each (apps, keys, acl, help)."""

from dockyard.commands import acl, apps, backup, doctor, events, help, keys  # noqa: F401  (registration)
