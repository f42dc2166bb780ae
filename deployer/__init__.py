"""deployer stage: image → running release, with zero downtime.

Importing it installs the real push pipeline and registers the commands (`ps:*`,
`config:*`, `releases*`, `run`, `logs`, `checks:*`, `resource:*`) and the start, rename
and destroy hooks.
"""

from deployer import commands, hooks  # noqa: F401  (registration)
from deployer.pipeline import deploy_source, redeploy
from dockyard.pipeline import set_pipeline, set_redeployer

set_pipeline(deploy_source)
set_redeployer(redeploy)
