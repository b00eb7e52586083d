"""Collection rules for the whole test tree.

tests/multihost/ builds containers with podman and deploys onto them (many minutes, root, a
podman bridge on the host): only `make test-multihost` runs it, by setting MAILGLUE_MULTIHOST=1.
`make test` (`pytest tests`) leaves the folder out.
"""

import os

collect_ignore = [] if os.environ.get("MAILGLUE_MULTIHOST") == "1" else ["multihost"]
