"""gitrecv stage: git push and clone over Dockyard's SSH server, served by dulwich."""

# commands registers git-receive-pack, git:* and repo:gc; housekeeping the scheduled gc.
from gitrecv import commands, housekeeping  # noqa: F401
