"""Host keys: generated once on first start, then loaded forever (clients pin them)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

HOST_KEY_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")


def _filename(alg: str) -> str:
    short = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ssh-rsa": "rsa"}[alg]
    return f"ssh_host_{short}_key"


def load_or_create_host_keys(directory: Path) -> list[asyncssh.SSHKey]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = []
    for alg in HOST_KEY_ALGORITHMS:
        path = directory / _filename(alg)
        if path.exists():
            keys.append(asyncssh.read_private_key(str(path)))
            continue
        key = asyncssh.generate_private_key(alg, **({"key_size": 3072} if alg == "ssh-rsa" else {}))
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        os.replace(tmp, path)
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
        keys.append(key)
    return keys
