"""``advbench schema``: the JSON schema of a spec with every loaded plugin's parameters."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, create_model

from advbench.contract.registry import Registry
from advbench.spec.schema import ModelSpec, SpecModel


def _entries(registry: Registry, kind: str, with_label: bool = False):
    members = []
    for entry in registry.entries(kind):
        fields = {"name": (Literal[entry.name], Field(description=entry.cls.summary()))}
        if with_label:
            fields["label"] = (Optional[str], Field(None, description="Name shown in results; defaults to `name`."))
        model_name = re.sub(r"\W", "_", f"{kind}_{entry.name}")
        members.append(create_model(model_name, __base__=entry.cls.Params, **fields))
    if not members:
        return dict
    if len(members) == 1:
        return members[0]
    return Annotated[Union[tuple(members)], Field(discriminator="name")]


def spec_schema(registry: Registry) -> dict:
    defense = _entries(registry, "defense")
    model = create_model(
        "Model",
        __base__=ModelSpec,
        architecture=(Optional[_entries(registry, "architecture")], None),
        defense=(Union[defense, list[defense]], Field(default={"name": "none"}, validate_default=False)),
    )
    spec = create_model(
        "Spec",
        __base__=SpecModel,
        dataset=(_entries(registry, "dataset"), ...),
        models=(list[model], Field(min_length=1)),
        attacks=(list[_entries(registry, "attack", True)], Field(default_factory=list)),
        certifiers=(list[_entries(registry, "certifier", True)], Field(default_factory=list)),
    )
    schema = spec.model_json_schema()
    schema["title"] = "advbench spec"
    return schema
