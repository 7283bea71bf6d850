"""The operations recipes are runnable as written: the CronJob's and the workflow's commands parse as
`farm submit` of a shipped job, and the docs (README, docs/cluster.md, nightly.md, bisect.md, store.md) document
every option of submit, diff and bisect."""

from __future__ import annotations

import re
import shlex

import yaml

from farm.cli import build_parser as _parser
from farm.cli import ops as cli_ops
from farm.store.layout import bisect_key, diff_key

from .conftest import REPO, docs_text

README = docs_text("cluster.md", "nightly.md", "bisect.md", "store.md")


def _submit_line(script: str) -> list[str]:
    [line] = [line for line in script.splitlines() if line.strip().startswith("farm submit")]
    return shlex.split(line)[1:]


def _check_submit(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert args.handler is cli_ops._submit
    assert (REPO / args.job).is_file() and args.job.as_posix() == "jobs/nightly.yaml"
    # Nothing secret in the job's env: the store's credentials and a Hugging Face token are the nodes' (deploy/).
    assert args.wait and args.env == [] and not args.allow_secret_env and str(args.working_dir) == "."


def test_the_cronjob_submits_the_nightly_job():
    cron = yaml.safe_load((REPO / "deploy" / "nightly-cronjob.yaml").read_text())
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    [container] = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"] for e in container["env"]}
    assert {"RAY_ADDRESS", "FARM_STORE", "FARM_WEBHOOK_URL"} <= env, "what farm submit reads from its env"
    _check_submit(_submit_line(container["args"][0]))


def test_the_workflow_submits_the_nightly_job():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert len(triggers["schedule"][0]["cron"].split()) == 5 and "workflow_dispatch" in triggers
    [step] = [s for s in workflow["jobs"]["submit"]["steps"] if "farm submit" in s.get("run", "")]
    assert {"RAY_ADDRESS", "FARM_STORE", "FARM_WEBHOOK_URL"} <= set(step["env"])
    _check_submit(_submit_line(step["run"]))


def test_every_option_of_submit_diff_and_bisect_is_documented():
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("submit", "diff", "bisect"):
        assert f"farm {name}" in README, name
        for action in commands[name]._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in README, f"farm {name} {flag} is not in the README or docs/"
    assert "--webhook" in README and "FARM_WEBHOOK_URL" in README


def test_the_layout_names_the_diff_and_the_bisect_verdict():
    assert diff_key("R").replace("R", "<run_id>") in README
    assert bisect_key("B").replace("B", "<bisect_id>") in README
    assert re.search(r"ray job submit --address", README), "the plain ray job submit recipe"
