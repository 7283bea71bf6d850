"""The documentation keeps up with the code: the CLI reference is the parser's, every job-spec field and
every probe is documented, the README stays a guide (short, the two commands up front), links resolve,
and every `farm` command the docs show parses."""

from __future__ import annotations

import argparse
import re
import shlex
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from farm.cli import build_parser
from farm.cli.reference import render
from farm.model.engines import ENGINE_SPECS
from farm.model.spec import JobSpec
from farm.registry import PROBES

from .conftest import REPO

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250


def test_the_cli_reference_is_the_parsers():
    assert (DOCS / "cli.md").read_text() == render(), "docs/cli.md is stale: run `make docs`"


def _nested_models(annotation: object) -> typing.Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _nested_models(argument)


def _job_models() -> dict[str, type[BaseModel]]:
    """JobSpec and every model its fields hold (lists, optionals, nested), by name."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [JobSpec]
    while todo:
        model = todo.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            todo.extend(_nested_models(field.annotation))
    return found


def test_every_job_spec_field_is_documented():
    models = _job_models()
    assert {"Model", "Variant", "Adapter", "Resources", "Retries", "Rule", "Unsupported", "Generation"} <= set(models)
    models.update({f"engine kind {kind}": spec for kind, spec in ENGINE_SPECS.items()})
    text = (DOCS / "job-spec.md").read_text() + (DOCS / "engines.md").read_text()
    missing = [f"{owner}.{name}" for owner, model in models.items() for name in model.model_fields
               if f"`{name}`" not in text]
    assert not missing, f"job-spec fields not documented (in backticks) in docs/job-spec.md or docs/engines.md: {missing}"


def test_every_probe_is_documented():
    text = (DOCS / "probes.md").read_text()
    missing = [name for name in PROBES.names() if not re.search(rf"^\| `{re.escape(name)}` \|", text, re.M)]
    assert not missing, f"probes without a row in docs/probes.md's table: {missing}"


def test_the_readme_is_a_guide():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move reference into docs/"
    first_screen = "\n".join(lines[:60])
    assert "`make demo` sets everything up and runs the main job on the embedded defaults" in first_screen
    assert "`make test` sets everything up and passes the tests" in first_screen


def _without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _without_code(page.read_text()), re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """The deepest subparser the leading words name (`env build` → farm env build's parser)."""
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


def _farm_lines() -> typing.Iterator[tuple[str, str]]:
    """Every `farm …` command line in the code blocks of the README and docs/ (continuations joined)."""
    for page in PAGES:
        if page.name == "cli.md":
            continue  # the parser's own help
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", page.read_text(), re.M | re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("farm "):
                    yield page.name, line


def test_every_farm_command_in_the_docs_parses():
    parser = build_parser()
    commands = {word for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for word in action.choices}
    bad = []
    lines = [(page, line) for page, line in _farm_lines() if line.split()[1] in commands]  # not output ("farm nightly: …")
    assert len(lines) > 20
    for page, line in lines:
        words = shlex.split(line)[1:]
        if "[" in line:  # a synopsis: its options must exist
            command = _subcommand(parser, words)
            known = {flag for action in command._actions for flag in action.option_strings}
            bad += [f"{page}: {line}: {flag}" for flag in re.findall(r"--[\w-]+", line) if flag not in known]
            continue
        try:
            parser.parse_args(words)
        except SystemExit:
            bad.append(f"{page}: {line}")
    assert not bad, f"commands in the docs that `farm` does not take: {bad}"


def test_the_reference_page_lists_every_command():
    text = (DOCS / "cli.md").read_text()
    for name in ("farm env build", "farm zoo build", "farm bisect", "farm submit"):
        assert f"## `{name}`" in text, name


def test_the_device_carry_folder_is_ignored():
    # docs/gpu/carry.py fills .carry/ with bundle parts; the device tool sends every file git does not ignore, so a
    # pattern git reads as something else (it has no comments after a pattern) sent ~700 MiB in each call.
    lines = (REPO / ".gitignore").read_text().splitlines()
    assert "/.carry/" in lines
    inline = [line for line in lines if not line.startswith("#") and " #" in line]
    assert not inline, f".gitignore: a comment after a pattern makes it part of the pattern: {inline}"
