"""deployer stage: image → running release, with zero downtime.

Importing it installs the real push pipeline and registers the commands (`ps:*`,
`config:*`, `releases*`, `run`, `logs`, `checks:*`, `resource:*`, `storage:*`,
`network:*`), the start, rename and destroy hooks, the user networks' provider and the
storage directories' part of backups.
"""

from deployer import commands, hooks, network, storage  # noqa: F401  (registration)
from deployer.pipeline import deploy_source, redeploy
from dockyard.pipeline import set_pipeline, set_redeployer

set_pipeline(deploy_source)
set_redeployer(redeploy)
