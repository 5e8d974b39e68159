"""Building blocks of the spec: the `param` field factory, flag and path types, the section base class.

Every parameter carries, besides its pydantic definition, the metadata that docs, the Azure ML
target and the resolver need (aliases, task-dependent defaults, the Azure ML type and group).
It lives in the JSON Schema under the `x-ftc` key, so the exported schema is the single source.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo

TASKS = ("text_classification", "question_answering", "translation", "summarization", "causal_lm")

# Groups of the Azure ML component docs (seeds 001/002), in their order; ftc-only groups follow.
DOC_GROUPS = (
    "Lora parameters",
    "Training parameters",
    "Early Stopping Parameters",
    "Deepspeed Parameters",
    "ONNX Runtime Parameters",
    "MLFlow Parameters",
    "Data and Model inputs",
)

X_FTC = "x-ftc"


def _parse_flag(value: Any) -> Any:
    """Accept YAML booleans and the Azure ML string booleans "true"/"false" (any case)."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


Flag = Annotated[
    bool,
    BeforeValidator(_parse_flag),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]}),
]


# Newlines and other control characters: what a value written on one line of an artifact cannot hold.
LINE_BREAK = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(value: str) -> str:
    """`value` when it is one non-blank line of text: it will be one line (or word) of an artifact."""
    if LINE_BREAK.search(value):
        raise ValueError("must be one line (no newline or other control character): it is written on one line")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


OneLine = Annotated[str, AfterValidator(one_line)]


def as_text(value: Any) -> Any:
    """YAML reads `precision: 16` as an int: numbers become their text (booleans stay as they are)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def param(
    default: Any = ...,
    description: str = "",
    *,
    name: str | None = None,
    aliases: tuple[str, ...] = (),
    task_defaults: dict[str, Any] | None = None,
    task_enum: dict[str, list[str]] | None = None,
    tasks: tuple[str, ...] | None = None,
    group: str | None = None,
    aml_type: str | None = None,
    aml_optional: bool = True,
    default_factory: Any = None,
    **constraints: Any,
) -> Any:
    """A spec parameter.

    `name` is needed only when aliases are given (pydantic does not pass the field name to
    `AliasChoices`). `task_defaults` override `default` for the listed tasks; `task_enum`
    narrows the enum per task (docs and rules); `tasks` limits where docs show the parameter.
    """
    meta: dict[str, Any] = {}
    if aliases:
        meta["aliases"] = list(aliases)
    if task_defaults:
        meta["task_defaults"] = task_defaults
    if task_enum:
        meta["task_enum"] = task_enum
    if tasks:
        meta["tasks"] = list(tasks)
    if group:
        meta["group"] = group
    if aml_type:
        meta["aml_type"] = aml_type
    if not aml_optional:
        meta["aml_optional"] = False
    extra: dict[str, Any] = {X_FTC: meta} if meta else {}
    alias = None
    if aliases:
        if name is None:
            raise TypeError("param() with aliases needs name=")
        alias = AliasChoices(name, *aliases)
    value = {"default_factory": default_factory} if default_factory is not None else {"default": default}
    return Field(
        **value,
        description=description,
        validation_alias=alias,
        json_schema_extra=extra or None,
        **constraints,
    )


def meta_of(field: FieldInfo) -> dict[str, Any]:
    """The `x-ftc` metadata of a field (empty when it has none)."""
    extra = field.json_schema_extra
    if isinstance(extra, dict):
        return dict(extra.get(X_FTC, {}))  # type: ignore[arg-type]
    return {}


def names_of(field_name: str, field: FieldInfo) -> tuple[str, ...]:
    """The primary name of a field followed by its accepted aliases."""
    return (field_name, *meta_of(field).get("aliases", ()))


@functools.cache
def _aliased_fields(model: type[BaseModel]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(field name, all its names) for the fields of `model` that have aliases."""
    return tuple(
        (name, names_of(name, field)) for name, field in model.model_fields.items() if meta_of(field).get("aliases")
    )


class Section(BaseModel):
    """A spec section: unknown keys are errors, and a key given twice (name + alias) too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_parameter(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field_name, names in _aliased_fields(cls):
                given = [n for n in names if n in data]
                if len(given) > 1:
                    raise ValueError(
                        f"{' and '.join(given)} name the same parameter ({field_name}): keep one"
                    )
        return data


__all__ = [
    "DOC_GROUPS",
    "Flag",
    "Section",
    "TASKS",
    "as_text",
    "meta_of",
    "names_of",
    "param",
]
