"""Test harness for tests/test_git.py: `dockyard …` with a scripted deploy pipeline.

The real pipeline builds images; the git tests exercise the push itself, so this entry point
loads every stage as `dockyard.cli` does and then installs a pipeline driven by a
`.pipeline` file in the pushed tree (one instruction per line):

    print TEXT     a `-----> TEXT` line
    sleep SECONDS  wait (to widen race windows and test streaming)
    fail TEXT      reject the deploy with TEXT

after which the revision is recorded (GIT_REV) as Dockyard's default pipeline does.
Run as `python -m tests.gitrecv_pipeline serve --data-dir …`.
"""

from __future__ import annotations

import sys
import time

import gitrecv.commands
from dockyard import cli, pipeline
from dockyard.apps import App
from dockyard.context import Context
from dockyard.pipeline import DeployFailed, Source

SCRIPT_FILE = ".pipeline"
# Short enough for a test to watch a stalled push be cut off.
gitrecv.commands.RECEIVE_IDLE_TIMEOUT = HARNESS_IDLE_TIMEOUT = 4.0


def scripted_pipeline(ctx: Context, app: App, source: Source) -> None:
    script = source.read_file(SCRIPT_FILE) or b""
    for line in script.decode().splitlines():
        verb, _, arg = line.partition(" ")
        if verb == "print":
            ctx.out.step(arg)
        elif verb == "sleep":
            time.sleep(float(arg))
        elif verb == "fail":
            raise DeployFailed(arg or "scripted failure")
    pipeline.record_revision(ctx, app, source)


def main() -> int:
    cli._load_stages()
    pipeline.set_pipeline(scripted_pipeline)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
