"""What every part of a job spec shares: strict models with one-line errors, names, the no-adapter label."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from farm.errors import did_you_mean

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


NO_LORA = "none"


class StrictModel(BaseModel):
    """Rejects unknown keys with a "did you mean" hint instead of pydantic's generic text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    raise ValueError(f"unknown field {key!r}.{did_you_mean(str(key), known)}")
        return data


def require_unique(values: list[str], what: str) -> None:
    seen = {v for v in values if values.count(v) > 1}
    if seen:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(sorted(seen))}")


class NestedError(ValueError):
    """A validation error from a model chosen at validation time (an engine's kind), with its own path.

    pydantic reports it at the field that chose the model; ``one_line`` appends ``loc``.
    """

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message

    @classmethod
    def of(cls, exc: ValidationError) -> NestedError:
        loc, message = _first_error(exc)
        return cls(loc, message)


def _first_error(exc: ValidationError) -> tuple[tuple[Any, ...], str]:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    message = re.sub(r"^(Value error|Assertion failed), ", "", first["msg"])
    nested = (first.get("ctx") or {}).get("error")
    if isinstance(nested, NestedError):
        loc, message = loc + nested.loc, nested.message
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "literal_error":
        message = f"{message} (got {first['input']!r})"
    elif first["type"] == "string_pattern_mismatch":
        message = f"{first['input']!r} is not a valid name: use letters, digits, '.', '_', '+', '-'"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return loc, f"{message}{more}"


def one_line(exc: ValidationError) -> str:
    loc, message = _first_error(exc)
    where = format_loc(loc)
    return f"{where}: {message}" if where else message


# What a field path shows as it is: a YAML key of word characters, dots, dashes, slashes and colons.
_PLAIN_KEY = re.compile(r"[\w.:/-]+")


def format_loc(loc: tuple[Any, ...]) -> str:
    """``engines[0].engine_args.x``; a key that is not a plain name is quoted (``models[0].'\\n'``), so the
    message stays one line whatever a YAML key holds."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part) if _PLAIN_KEY.fullmatch(str(part)) else repr(part)
            out += f".{name}" if out else name
    return out
