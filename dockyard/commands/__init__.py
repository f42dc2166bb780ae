"""The core's own command groups, one module each."""

from dockyard.commands import acl, apps, backup, config, doctor, events, help, keys  # noqa: F401  (registration)
