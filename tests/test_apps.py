"""`apps:rename` and `apps:destroy` of a deployed app: containers, routes and images follow
the name, and go with the app."""

from __future__ import annotations

import json

from tests.conftest import DockyardServer
from tests.deploying import busybox_repo, containers, ok, push, wait_for_body


def test_rename_moves_containers_and_route_then_destroy_removes_them(
    shared_server: DockyardServer,
    docker_engine,
    tmp_path,  # noqa: ANN001
) -> None:
    srv, app = shared_server, "movable"
    ok(push(srv, busybox_repo(tmp_path, app, "steady"), app))
    wait_for_body(srv, app, "steady")
    renamed = f"{app}-renamed"
    ok(srv.ssh("apps:rename", app, renamed))
    wait_for_body(srv, renamed, "steady", timeout=10)
    assert [c.name for c in containers(docker_engine, renamed)] == [f"{renamed}.web.1"]
    assert containers(docker_engine, app, live_only=False) == []
    releases = json.loads(srv.ssh("releases", renamed, "--format", "json").stdout)
    assert releases[0]["image"].startswith(f"dockyard/{renamed}:")
    ok(srv.ssh("apps:destroy", renamed, "--force"))
    assert containers(docker_engine, renamed, live_only=False) == []
    assert docker_engine.images.list(name=f"dockyard/{renamed}") == []
