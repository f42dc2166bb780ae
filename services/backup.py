"""Services in `dockyard backup` / `restore`.

Backup: each service's data as a consistent dump taken online by its own tool (the same as
`KIND:export`: `pg_dump -Fc`, an RDB snapshot over the replication protocol, `mysqldump
--single-transaction`), under the service's lock, streamed to a private scratch file and
added as `services/KIND/NAME/<dump>`. A stopped service is started for the dump and
stopped again. Restore (state.db already back, so names, owners and passwords are): each
service's container and data directory are made afresh, the dump is loaded, and a service
that was stopped is stopped again.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.commands.backup import BackupPart, register_backup_part
from dockyard.errors import DockyardError
from dockyard.output import Output
from services.base import ServiceStore
from services.commands import service_lock
from services.kinds import KINDS
from services.runtime import Runtime

if TYPE_CHECKING:
    from dockyard.services import Services

PREFIX = "services"


def write(services: Services, tar: tarfile.TarFile, scratch: Path, out: Output) -> list[str]:
    included = []
    for svc in ServiceStore(services.state).all():
        kind = KINDS.get(svc.kind)
        if kind is None:
            continue
        runtime = Runtime(services, kind)
        dump = scratch / f"{kind.name}-{svc.name}"
        with service_lock(services, kind, svc.name):
            found = runtime.container(svc)
            started = found is None or found.status != "running"
            if started:
                runtime.start(svc, out)
            try:
                with open(dump, "wb") as f:
                    runtime.export_to(svc, f)
            finally:
                if started and not svc.running:
                    runtime.stop(svc)
        name = f"{PREFIX}/{kind.name}/{svc.name}/{kind.dump_name}"
        tar.add(dump, name)
        dump.unlink()
        included.append(name)
    return included


def restore(services: Services, folder: Path, out: Output) -> list[str]:
    restored = []
    failed = []
    for svc in ServiceStore(services.state).all():
        kind = KINDS.get(svc.kind)
        if kind is None:
            continue
        runtime = Runtime(services, kind)
        dump = folder / kind.name / svc.name / kind.dump_name
        out.step(f"Restoring {kind.name} service {svc.name}")
        try:
            with service_lock(services, kind, svc.name):
                runtime.destroy(svc)  # the backup's data wins over whatever was here
                runtime.create(svc, out)
                runtime.wait_ready(svc)
                if dump.is_file():
                    with open(dump, "rb") as f:
                        kind.import_stream(runtime, svc, f)
                if not svc.running:
                    runtime.stop(svc)
        except DockyardError as exc:
            out.error(f"{kind.name} service {svc.name}: {exc.message}")
            failed.append(f"{kind.name} {svc.name}")
            continue
        restored.append(f"{PREFIX}/{kind.name}/{svc.name}")
    if failed:
        raise DockyardError("services not restored: " + ", ".join(failed))
    return restored


register_backup_part(BackupPart(PREFIX, write, restore))
