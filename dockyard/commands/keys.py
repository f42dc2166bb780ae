"""`ssh-keys:*`: the keys that may log in, with a name and a role each. Admin only."""

from __future__ import annotations

from dockyard.access import Access
from dockyard.context import Context
from dockyard.errors import UsageError
from dockyard.registry import CommandParser, command

MAX_KEY_BYTES = 16 * 1024


@command(
    "ssh-keys:add", "Add a public key (from KEYFILE or stdin)", "[--admin] NAME [KEYFILE]",
    access=Access.ADMIN,
)
def add(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ssh-keys:add")
    parser.add_argument("--admin", action="store_true")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("keyfile", metavar="KEYFILE", nargs="?")
    args = parser.parse_args(argv)
    if args.keyfile and args.keyfile != "-":
        # Only from the local CLI does a file path mean anything; over SSH it would name a
        # file on the server, which a remote admin must not be able to read this way.
        if not ctx.local:
            raise UsageError("Over SSH, pipe the key on stdin: ssh … ssh-keys:add NAME < key.pub")
        try:
            with open(args.keyfile, "rb") as f:
                data = f.read(MAX_KEY_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"Cannot read {args.keyfile}: {exc.strerror}") from None
    else:
        data = ctx.stdin.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise UsageError("Invalid ssh public key")
    text = data.decode("utf-8", "replace").strip()
    entry = ctx.services.keys.add(args.name, text, admin=args.admin)
    ctx.out.line(entry.fingerprint)
    ctx.event("ssh-keys:add", None, f"{entry.name} {entry.fingerprint}")


@command("ssh-keys:list", "List the keys that may log in", "[--format json]", access=Access.ADMIN)
def list_(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ssh-keys:list")
    parser.add_format()
    args = parser.parse_args(argv)
    entries = ctx.services.keys.entries()
    if args.format == "json":
        ctx.out.json([e.as_dict() for e in entries])
        return
    if not entries:
        ctx.out.warn("No public keys found.")
    for e in entries:
        role = "admin" if e.is_admin else "user"
        ctx.out.line(f'{e.fingerprint} NAME="{e.name}" ROLE="{role}"')


@command("ssh-keys:remove", "Remove a key by name", "NAME", access=Access.ADMIN)
def remove(ctx: Context, argv: list[str]) -> None:
    parser = CommandParser("ssh-keys:remove")
    parser.add_argument("name", metavar="NAME")
    args = parser.parse_args(argv)
    entry = ctx.services.keys.remove(args.name)
    ctx.services.forget_key(entry.name)
    ctx.out.step(f"Removed key {entry.name} ({entry.fingerprint})")
    ctx.event("ssh-keys:remove", None, f"{entry.name} {entry.fingerprint}")
