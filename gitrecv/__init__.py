"""gitrecv stage: git push and clone over Dockyard's SSH server, served by dulwich."""

from gitrecv import commands  # noqa: F401  (registers git-receive-pack, git:*, repo:gc)
