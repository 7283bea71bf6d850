"""What a failing verdict means for a user: its kind, and the root cause it shares with other cells.

Kinds (``FailureKind``), decided by ``KIND_RULES`` below, first match wins:

- ``refused``: vLLM declined the combination before serving, with an error meant for its users
  ("No WNA16 MoE backend supports the deployment configuration", a config validation error that
  names the option). Not a bug to report; a limit to know.
- ``broken``: an internal error inside vLLM (AttributeError, KeyError, a kernel error, an internal
  contract's NotImplementedError, a crash of the process): a bug to report.
- ``wrong``: no error, but a correctness probe failed: the most dangerous kind.

Timeouts and the infrastructure outcomes (infra_error, env_error) keep their own statuses and have no kind.

Root causes: a signature (``farm.cell.signature``) hashes the exception type, the normalised message and
the innermost vLLM frame's file and function, so it splits one bug whose message names a different class
per architecture ('SharedFusedMoE' for Qwen2-MoE, 'FusedMoE' for Mixtral, at the same line) and one
whose code moved to another file between releases. A root cause is the coarser key above signatures:
the exception type, the message with quoted class names masked, and the innermost vLLM function, with
neither file nor line. Each signature is one variant of its root cause. Both are computed from what a
result stores, so a rule change here applies to every stored run alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

from farm.model.results import CellStatus, ErrorInfo


class FailureKind(str, Enum):
    REFUSED = "refused"
    BROKEN = "broken"
    WRONG = "wrong"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


# Glyphs that DejaVu and Liberation have (a kind must never render as tofu); ⊖ is not ⊘ (unsupported).
_SYMBOLS = {FailureKind.REFUSED: "⊖", FailureKind.BROKEN: "✗", FailureKind.WRONG: "≠"}
_MEANINGS = {
    FailureKind.REFUSED: "vLLM declined the combination before serving, with an error meant for its users",
    FailureKind.BROKEN: "an internal error inside vLLM (or its process died): a bug to report",
    FailureKind.WRONG: "no error, but a correctness probe failed: wrong output",
}

# Messages vLLM writes for its users when it declines: what is unsupported and what to do instead.
_USER_FACING = (
    r"not (yet )?supported|unsupported|does(n't| not) support|\bno\b[\w\s-]{0,60}\bsupports?\b|only supports?"
    r"|is only (supported|available)|\brequires?\b|\bplease (use|install|set|specify)\b|\binstall\b|\bdisable\b"
    r"|not compatible|incompatible|cannot be used (with|together)|failed to find a kernel|not implemented for"
)
# A ValueError naming a limit of the engine's configuration that the combination exceeds (LoRA rank > max_lora_rank).
_OVER_A_LIMIT = r"\b(is|are) (greater|larger|bigger|smaller|less|lower) than (the )?(max|min)"
# NotImplementedError is also how vLLM marks a method a subclass forgot: that is an internal contract, a bug.
_INTERNAL_CONTRACT = r"^\s*$|\bmust (select|implement|override|be implemented)\b|\babstract\b"
# Pydantic config errors read "VllmConfig: …" once ``signature.headline`` has put the reason first.
_CONFIG_HEADLINE = r"^\w*Config: "
_CONFIG_CODE = r"^vllm/(config/|config\.py|engine/arg_utils\.py)"
_BEFORE_SERVING = (None, "load")  # the probe running when it failed: None is the engine build


@dataclass(frozen=True)
class KindRule:
    """One rule: a failure matches when each given condition holds; ``why`` says it in the docs and tests."""

    kind: FailureKind
    why: str
    types: frozenset[str] = frozenset()  # exception type names; empty: any
    message: str | None = None  # regex searched (case-insensitive, per line) in the message and its headline
    where: str | None = None  # regex matched against the innermost vLLM frame (vllm/…/file.py:LINE)
    before_serving: bool = False  # only while building the engine (or in the load probe)

    def matches(self, error: ErrorInfo) -> bool:
        if self.types and error.type not in self.types:
            return False
        # The raw message and its headline (a pydantic error's reason comes first there: "VllmConfig: …").
        # Only the parts there are: a missing headline is no empty line (which _INTERNAL_CONTRACT would match).
        text = "\n".join(part for part in (error.message, error.normalized_message) if part)
        if self.message is not None and not re.search(self.message, text, re.IGNORECASE | re.MULTILINE):
            return False
        if self.where is not None and not (error.frame and re.search(self.where, error.frame)):
            return False
        return not self.before_serving or error.probe in _BEFORE_SERVING


KIND_RULES: tuple[KindRule, ...] = (
    KindRule(FailureKind.WRONG, "a probe judged the output wrong; nothing raised", types=frozenset({"WrongOutput"})),
    KindRule(FailureKind.BROKEN, "NotImplementedError of an internal contract (a subclass's missing method)",
             types=frozenset({"NotImplementedError"}), message=_INTERNAL_CONTRACT),
    KindRule(FailureKind.REFUSED, "vLLM's config validation rejected the combination",
             message=_CONFIG_HEADLINE, before_serving=True),
    KindRule(FailureKind.REFUSED, "a ValueError from vLLM's config code, before serving",
             types=frozenset({"ValueError"}), where=_CONFIG_CODE, before_serving=True),
    KindRule(FailureKind.REFUSED, "a decline written for users: what is unsupported, what to do instead",
             types=frozenset({"NotImplementedError", "ValueError", "RuntimeError", "ValidationError"}),
             message=_USER_FACING, before_serving=True),
    KindRule(FailureKind.REFUSED, "a ValueError naming a configured limit the combination exceeds",
             types=frozenset({"ValueError"}), message=_OVER_A_LIMIT, before_serving=True),
    KindRule(FailureKind.BROKEN, "any other exception inside vLLM"),
)


def failure_kind(status: CellStatus | str, error: ErrorInfo | None) -> FailureKind | None:
    """The kind of a cell's verdict; None for a pass and for statuses that are no verdict of this sort."""
    status = CellStatus(status)
    if status == CellStatus.CRASH:
        return FailureKind.BROKEN
    if status == CellStatus.FAIL and error is None:  # every exception path records an error: probes judged it
        return FailureKind.WRONG
    if status not in (CellStatus.FAIL, CellStatus.FLAKY) or error is None:
        return None
    return next(rule.kind for rule in KIND_RULES if rule.matches(error))


def kind_rule(error: ErrorInfo) -> KindRule:
    """The rule that decides ``error``'s kind (for explanations)."""
    return next(rule for rule in KIND_RULES if rule.matches(error))


# --- root causes --------------------------------------------------------------------------------------------

# A class name the architecture or the tokenizer puts in the message, not the bug: quoted ('SharedFusedMoE' for
# Qwen2-MoE, 'FusedMoE' for Mixtral), or a bare CamelCase name before "has no attribute" (Qwen2Tokenizer,
# TokenizersBackend: vLLM 0.11.0 reading a tokenizer attribute that transformers 5 removed).
_CLASS_NAME = re.compile(r"'[A-Z][A-Za-z0-9_]*'|\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9_]*(?= (?:object )?has no attribute)")
_FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def message_template(error: ErrorInfo) -> str:
    """The normalised message with class names masked: what stays when the architecture changes."""
    return _CLASS_NAME.sub("<class>", error.normalized_message or error.message or "")


def innermost_function(error: ErrorInfo) -> str | None:
    """The function of the error's innermost vLLM frame, read from its stored traceback."""
    if not error.frame:
        return None
    path, _, line = error.frame.rpartition(":")
    found = None
    for text in error.traceback_tail.splitlines():
        match = _FRAME_LINE.match(text)
        if match and match.group("line") == line and match.group("file").replace("\\", "/").endswith(path):
            found = match.group("func").strip()
    return found


def root_cause(error: ErrorInfo | None) -> str | None:
    """A stable id of the error's root cause: type, message template and innermost vLLM function."""
    if error is None or not error.signature:
        return None
    if error.type == "WrongOutput" or not error.frame:
        # No vLLM frame to move: a wrong answer (the failed probes) or an error outside vLLM is its signature.
        key = "|".join([error.type, message_template(error)])
    else:
        key = "|".join([error.type, message_template(error), innermost_function(error) or error.frame.rsplit(":", 1)[0]])
    return "R" + hashlib.sha256(key.encode()).hexdigest()[:9]
