"""The deployer's command groups, one module each: `releases*`, `ps:*`, `run`, `logs`,
`checks:*`, `resource:*`, and the cluster's `swarm:*`, `nodes:*`, `scheduler:*`,
`registry:*`. Those that redeploy hold the app's lock around their work.
(`config:*` lives beside the config store in the core and reaches the deployer through
`dockyard.pipeline.redeploy`.)"""

from deployer.commands import (  # noqa: F401
    checks,
    cron,
    logs,
    ps,
    releases,
    resource,
    run,
    swarm,
)
