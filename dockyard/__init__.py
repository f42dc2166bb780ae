"""Dockyard: a single-host PaaS driven by `git push` and `ssh`."""

__version__ = "0.1.0"
