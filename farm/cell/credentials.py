"""A cell's process holds no store credentials.

Only the driver writes to the store; a cell returns its result to it through Ray. Yet a cell's process
inherits the environment of the Ray worker that runs it, and so of whoever started Ray: with a local Ray,
the driver's ``AWS_SECRET_ACCESS_KEY``. Whatever vLLM or a model's code puts in an error message or a log
reaches the result, the matrix, the exports and the page (a fault-injection cell that printed its
environment wrote the real secret into all of them). So the first thing a cell does is drop them: the
variables of botocore's credential chain, and anything named like an access key or a secret key. A job
keeps one by name (``keep_env``) when its cells need it, e.g. a profile for a model bucket.
"""

from __future__ import annotations

import os
import re

# botocore's credential chain (env provider, profiles, web identity, container credentials), and the access and
# secret key names other S3-compatible tools use (MinIO's MINIO_SECRET_KEY, S3_SECRET_KEY …).
STORE_CREDENTIALS = re.compile(
    r"^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN|SECURITY_TOKEN|PROFILE|DEFAULT_PROFILE|SHARED_CREDENTIALS_FILE"
    r"|CONFIG_FILE|WEB_IDENTITY_TOKEN_FILE|ROLE_ARN|ROLE_SESSION_NAME|CONTAINER_\w+)$"
    r"|(^|_)(ACCESS_KEY_ID|SECRET_ACCESS_KEY|ACCESS_KEY|SECRET_KEY)$"
)


def drop_store_credentials(keep: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Remove store credentials from this process's environment (its children inherit the rest); the names
    removed, for the cell's log."""
    dropped = [name for name in os.environ if STORE_CREDENTIALS.search(name) and name not in keep]
    for name in dropped:
        del os.environ[name]
    return sorted(dropped)
