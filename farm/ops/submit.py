"""`farm submit`: a job to a Ray cluster through Ray's job SDK, from a laptop or a cron job.

What it does is what this ``ray job submit`` does, with the checks done first:

    ray job submit --address http://HEAD:8265 --working-dir . --submission-id RUN_ID \\
      --runtime-env-json '{"env_vars": {...}}' -- python -m farm run JOB --store URL --run-id RUN_ID

The entrypoint is the run's driver: it runs on the head node, joins the cluster (Ray
sets ``RAY_ADDRESS`` for it) and is the only process that writes the store. So the
store must be one the head can reach (an ``s3://`` URL, or an absolute path on the
head), and the head needs the store's credentials (an instance role, or ``--env``).
The run id is chosen here and is also the Ray submission id: one name for
``ray job logs`` and for ``farm status``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.errors import SubmitError
from farm.text import first_line

DASHBOARD_PORT = 8265
# Never uploaded: envs, results and git history are large and say nothing to the driver.
DEFAULT_EXCLUDES = [".venv", ".git", "farm-results", "__pycache__", "*.egg-info"]
# A head that just started answers on its dashboard a few seconds before its job agent registers.
AGENT_WAIT_S = 60
POLL_S = 2.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Submission:
    run_id: str
    job_name: str
    address: str
    store_url: str
    entrypoint: str
    runtime_env: dict[str, Any]
    s3_endpoint: str | None = None
    status: str | None = None  # with --wait: the Ray job's final status
    exit_code: int | None = None
    log_lines: list[str] = field(default_factory=list)

    def instructions(self) -> str:
        endpoint = f" --s3-endpoint {self.s3_endpoint}" if self.s3_endpoint else ""
        store = f"--store {shlex.quote(self.store_url)}{endpoint}"
        return "\n".join([
            f"submitted run {self.run_id} of job {self.job_name} to {self.address}",
            f"  ray job id: {self.run_id}",
            f"  store:      {self.store_url}",
            f"  follow:     ray job logs -f {self.run_id} --address {self.address}",
            f"  status:     farm status {self.run_id} {store}",
            f"  matrix:     farm matrix {self.run_id} {store}     (once it has finished)",
            f"  stop:       ray job stop {self.run_id} --address {self.address}",
        ])


def cluster_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS or an http(s) $RAY_ADDRESS (what `ray job submit` reads)."""
    env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or ""
    address = address or (env if env.startswith(("http://", "https://")) else "")
    if not address:
        raise SubmitError("give the cluster with --address http://HEAD:8265 (the head's dashboard; from a laptop "
                          "`ray dashboard cluster.yaml` forwards it to http://127.0.0.1:8265) or set RAY_ADDRESS")
    if not address.startswith(("http://", "https://")):
        raise SubmitError(f"--address {address!r}: jobs are submitted to the head's dashboard, an http URL such as "
                          f"http://{address.split('://')[-1].split(':')[0]}:{DASHBOARD_PORT}")
    return address.rstrip("/")


def check_store_url(store_url: str | None) -> str:
    store_url = store_url or os.environ.get("FARM_STORE")
    if not store_url:
        raise SubmitError("give --store s3://BUCKET/PREFIX (or an absolute path on the head node, or set "
                          "FARM_STORE): the run's driver on the head writes the results there")
    if "://" not in store_url and not Path(store_url).is_absolute():
        raise SubmitError(f"--store {store_url!r} is a relative path: on the head it would land in the job's temporary "
                          "working dir and vanish; give s3://BUCKET/PREFIX or an absolute path on the head node")
    return store_url


# Names and values that look like credentials. Ray keeps a job's runtime_env, env vars included, in its job table:
# `ray job list` and the dashboard show them to everyone who can reach the cluster, for as long as it runs.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY|SESSION_KEY", re.I)
_SECRET_VALUE = re.compile(
    r"^(AKIA|ASIA)[0-9A-Z]{16}$"  # AWS access key ids
    r"|^hf_[A-Za-z0-9]{30,}$"  # Hugging Face tokens
    r"|^(ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}$"  # GitHub tokens
    r"|^xox[abpr]-[A-Za-z0-9-]{10,}$"  # Slack tokens
    r"|^-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


def secret_like(name: str, value: str) -> str | None:
    """Why an env var looks like a credential (its name or its value), or None."""
    if _SECRET_NAME.search(name):
        return "its name says so"
    if _SECRET_VALUE.search(value.strip()):
        return "its value has a credential's form"
    return None


def check_no_secrets(env_vars: dict[str, Any]) -> None:
    for name, value in env_vars.items():
        why = secret_like(str(name), str(value))
        if why:
            raise SubmitError(f"env var {name} looks like a secret ({why}): Ray keeps a job's env vars in its job table, "
                              "shown by `ray job list` and the dashboard to everyone who reaches the cluster; give the "
                              "nodes an instance role instead (deploy/README.md), or pass --allow-secret-env to send it anyway")


def build_runtime_env(
    working_dir: Path, runtime_env_json: str | None, env: list[str], webhook: str | None, *, allow_secrets: bool = False
) -> dict[str, Any]:
    try:
        runtime_env = json.loads(runtime_env_json) if runtime_env_json else {}
    except json.JSONDecodeError as exc:
        raise SubmitError(f"--runtime-env-json is not valid JSON ({exc.msg} at column {exc.colno}); "
                          """e.g. '{"env_vars": {"AWS_REGION": "us-east-1"}}'""") from None
    if not isinstance(runtime_env, dict):
        raise SubmitError("--runtime-env-json must be a JSON object, e.g. '{\"env_vars\": {\"AWS_REGION\": \"us-east-1\"}}'")
    if "working_dir" in runtime_env:
        raise SubmitError("give the working dir once: --working-dir DIR, not working_dir in --runtime-env-json")
    runtime_env["working_dir"] = str(working_dir)
    runtime_env.setdefault("excludes", DEFAULT_EXCLUDES)
    env_vars = dict(runtime_env.get("env_vars") or {})
    for item in env:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                raise SubmitError(f"--env {name}: {name} is not set here; set it, or give --env {name}=VALUE")
            value = os.environ[name]
        env_vars[name] = value
    if not allow_secrets:
        check_no_secrets(env_vars)
    if webhook:
        env_vars["FARM_WEBHOOK_URL"] = webhook  # not in the entrypoint: a webhook URL is a secret
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env


def relative_job(job: Path, working_dir: Path) -> str:
    try:
        return job.resolve().relative_to(working_dir).as_posix()
    except ValueError:
        raise SubmitError(f"{job} is not inside the working dir {working_dir}: the cluster sees only what is uploaded; "
                          "put the job file there or give --working-dir a folder that holds it") from None


def submit(
    job_path: Path,
    *,
    address: str | None,
    store_url: str | None,
    s3_endpoint: str | None = None,
    working_dir: Path = Path("."),
    runtime_env_json: str | None = None,
    env: list[str] | None = None,
    run_id: str | None = None,
    webhook: str | None = None,
    python: str = "python",
    run_args: list[str] | None = None,
    allow_secret_env: bool = False,
) -> tuple[Submission, Any]:
    """Validate the job here, then submit ``farm run`` as a Ray job. Returns the submission and the client."""
    from farm.model.spec import load_job
    from farm.report.diff import check_webhook
    from farm.runner.driver import make_run_id

    address = cluster_address(address)
    token_source = use_token_if_wanted(address)  # before Ray is imported (make_run_id's module imports it)
    job = load_job(job_path)  # a bad spec fails here, in one line, before anything is uploaded
    store_url = check_store_url(store_url)
    working_dir = working_dir.expanduser().resolve()
    if not working_dir.is_dir():
        raise SubmitError(f"--working-dir {working_dir} is not a directory; give the folder to upload (e.g. the repo: .)")
    rel_job = relative_job(job_path, working_dir)
    webhook = check_webhook(webhook) if webhook else None
    runtime_env = build_runtime_env(working_dir, runtime_env_json, env or [], webhook, allow_secrets=allow_secret_env)
    run_id = run_id or make_run_id(job.name)
    command = [python, "-m", "farm", "run", rel_job, "--store", store_url, "--run-id", run_id]
    if s3_endpoint:
        command += ["--s3-endpoint", s3_endpoint]
    command += run_args or []
    submission = Submission(run_id=run_id, job_name=job.name, address=address, store_url=store_url,
                            entrypoint=shlex.join(command), runtime_env=runtime_env, s3_endpoint=s3_endpoint)
    client = _client(address, token_source)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(entrypoint=submission.entrypoint, runtime_env=runtime_env, submission_id=run_id,
                              metadata={"farm_job": job.name, "farm_store": store_url})
            break
        except RuntimeError as exc:
            text = str(exc)
            if "No available agent" in text and time.monotonic() < deadline:
                time.sleep(1)
                continue
            if "already exists" in text:
                raise SubmitError(f"a Ray job {run_id!r} already exists on {address}; give another --run-id") from None
            raise SubmitError(f"{address} refused the job: {first_line(text, 300)}") from None
    return submission, client


def auth_token() -> tuple[str | None, str]:
    """The Ray token this machine has, and where from, in Ray's own order: ``RAY_AUTH_TOKEN``, the file
    ``RAY_AUTH_TOKEN_PATH`` names, ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    for path, source in ((os.environ.get("RAY_AUTH_TOKEN_PATH"), "$RAY_AUTH_TOKEN_PATH"),
                         (str(Path.home() / ".ray" / "auth_token"), "~/.ray/auth_token")):
        if path:
            try:
                token = Path(path).read_text().strip()
            except OSError:
                continue
            if token:
                return token, f"{source} ({path})"
    return None, ""


def _wants_token(address: str) -> bool:
    """Whether the job server refuses a request without a token (token authentication on: HTTP 401)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address}/api/jobs/", timeout=10):  # noqa: S310 - the cluster's own URL
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (OSError, ValueError):
        return False  # unreachable: the SDK says so below, in its own words


def _no_token(address: str) -> str:
    return (f"the Ray cluster at {address} wants a token (token authentication is on) and this machine has none: copy "
            "the head's, e.g. `ray exec cluster.yaml 'cat ~/.ray/auth_token' > ~/.ray/auth_token`, or set RAY_AUTH_TOKEN")


def use_token_if_wanted(address: str) -> str:
    """Turn on Ray's token auth for this process when the cluster wants a token; returns where the token comes
    from, or '' when none is needed. Call it before anything imports Ray: Ray reads the mode when imported."""
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return auth_token()[1] or "none found"
    if not _wants_token(address):
        return ""
    token, source = auth_token()
    if token is None:
        raise SubmitError(_no_token(address))
    # Ray's own loader looks in the same places, but reads the home of the user's passwd entry, not $HOME:
    # hand it the token found.
    if "ray" in sys.modules:  # the farm's own order of imports went wrong: say how to get on regardless
        raise SubmitError(f"the Ray cluster at {address} wants a token: set RAY_AUTH_MODE=token (the token is in {source})")
    os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"] = "token", token
    return source


def _client(address: str, source: str = "") -> Any:
    try:
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise SubmitError("Ray's job SDK is missing: pip install 'ray[default]' (the version the cluster runs)") from None
    # The SDK logs each package upload at INFO ("already exists, skipping upload"): noise on a terminal.
    logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        if not source:  # the job server asked for no token a moment ago (a head still starting): it does now
            raise SubmitError(_no_token(address) if auth_token()[0] is None else
                              f"the Ray cluster at {address} wants a token and has just begun to ask for it; run "
                              f"farm submit again (it finds the token in {auth_token()[1]})") from None
        raise SubmitError(f"the Ray cluster at {address} refused the token from {source} "
                          f"({first_line(str(exc), 120)}): get the cluster's token (`ray get-auth-token` on the head) into "
                          "~/.ray/auth_token or RAY_AUTH_TOKEN") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SubmitError(f"cannot reach the Ray job server at {address}: {first_line(str(exc), 300)}; check the address "
                          f"(the head's dashboard, port {DASHBOARD_PORT}) and that this machine can reach it") from None


def follow(submission: Submission, client: Any, out: Any = sys.stdout) -> Submission:
    """Print the job's log as it grows until the job ends; sets ``status`` and ``exit_code``."""
    shown = 0
    while True:
        status = str(client.get_job_status(submission.run_id).value)
        logs = client.get_job_logs(submission.run_id)
        if len(logs) > shown:
            out.write(logs[shown:])
            out.flush()
            shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(POLL_S)
    info = client.get_job_info(submission.run_id)
    submission.status = status
    submission.exit_code = info.driver_exit_code if info.driver_exit_code is not None else (0 if status == "SUCCEEDED" else 1)
    return submission

