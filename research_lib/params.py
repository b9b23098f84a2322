"""Strict parameters, the bottom floor every parameter file shares.

One pydantic base (unknown keys refused, values frozen), reading a YAML mapping, refusing
secrets, and the "did you mean" hint that every refusal of a name gives. The run parameters
(``research_lib.config``), the schedule, the alert settings and the promotion thresholds all
build on it; this module imports nothing of Spartan but its errors.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from research_lib.errors import ConfigError

SECRET_NAMES = ("ANTHROPIC_API_KEY", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "SPARTAN_SMTP_PASSWORD")
_SECRET_WORDS = ("api_key", "apikey", "secret", "password")  # anywhere in a key; and a key part "token"


class StrictModel(BaseModel):
    """A parameter section: unknown keys are refused, values cannot be changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def closest(value: object, valid: Iterable[str], *, fold: Callable[[str], str] | None = None) -> str | None:
    """The valid name closest to ``value`` (difflib's ratio), or None when none is close.

    ``fold`` compares names in another form (``str.upper`` for exchange codes) and the valid
    name is returned as it is spelled.
    """
    folded: dict[str, str] = {}
    for v in valid:
        folded.setdefault(fold(str(v)) if fold else str(v), str(v))
    close = difflib.get_close_matches(fold(str(value)) if fold else str(value), list(folded), n=1)
    return folded[close[0]] if close else None


def did_you_mean(value: object, valid: Iterable[str], *, fold: Callable[[str], str] | None = None) -> str:
    """`` Did you mean 'X'?`` for the valid name closest to ``value`` (see ``closest``), or ""."""
    name = closest(value, valid, fold=fold)
    return f" Did you mean {name!r}?" if name is not None else ""


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` (empty file: {}); a ConfigError names ``what`` and the file
    when it is not valid YAML or not a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys to values, not {type(raw).__name__}.")
    return raw


def refuse_secrets(raw: dict[str, Any], path: Path, prefix: str = "") -> None:
    """Refuse keys that look like secrets, and values equal to a key set in the environment."""
    live = {os.environ[n] for n in SECRET_NAMES if len(os.environ.get(n, "")) >= 8}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if any(word in str(key).lower() for word in _SECRET_WORDS) or "token" in str(key).lower().split("_"):
            raise ConfigError(
                f"{path}: key {dotted!r} looks like a secret. Secrets never go in parameter files "
                "(they are copied into reports); set them in the environment or a git-ignored .env."
            )
        if isinstance(value, dict):
            refuse_secrets(value, path, prefix=f"{dotted}.")
        elif live and any(secret in str(value) for secret in live):
            raise ConfigError(f"{path}: the value of {dotted!r} contains an API key from the environment. "
                              "Secrets never go in parameters (they are copied into reports); remove it.")


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``X`` or ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def model_at(root: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The section model at the dotted location ``loc`` under ``root`` (keys or aliases)."""
    model: type[BaseModel] | None = root
    for name in loc:
        fields = {field.alias or key: field for key, field in model.model_fields.items()}
        field = fields.get(str(name)) or model.model_fields.get(str(name))
        model = section_model(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a section accepts, as a file spells them (aliases where a field has one)."""
    return sorted(field.alias or name for name, field in model.model_fields.items())


def describe_errors(err: ValidationError, heading: str, root: type[BaseModel],
                    show: Callable[[Any], Any] = lambda value: value) -> str:
    """One paragraph for a refused parameter file: ``heading``, then a line per problem naming
    the dotted key, what is wrong, the value given (through ``show``, e.g. a redactor) and,
    for an unknown key, the valid keys and the closest one."""
    lines = [heading]
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            model = model_at(root, problem["loc"][:-1])
            valid = valid_keys(model) if model else []
            lines.append(f"- {where}: unknown key; valid keys here: {valid}.{did_you_mean(problem['loc'][-1], valid)}")
        elif not problem["loc"]:  # a rule across sections: its message names the keys; the input is the whole file
            lines.append(f"- {problem['msg'].removeprefix('Value error, ')}.")
        else:
            lines.append(f"- {where}: {problem['msg']} (got {show(problem.get('input'))!r}).")
    return "\n".join(lines)


__all__ = ["SECRET_NAMES", "StrictModel", "closest", "describe_errors", "did_you_mean", "model_at", "read_mapping",
           "refuse_secrets", "section_model", "valid_keys"]
