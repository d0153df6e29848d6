"""The manifest's JSON Schema, generated from the models."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from keysync.manifest.model import Manifest
from keysync.manifest.sinks import BUILTIN_SINK_CONFIGS, PluginSinkConfig

SCHEMA_ID = "https://github.com/keysync/keysync/schemas/keysync.schema.json"


def manifest_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    choices = []
    models: list[type[BaseModel]] = [*BUILTIN_SINK_CONFIGS.values(), PluginSinkConfig]
    for model in models:
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        definitions.update(sub.pop("$defs", {}))
        definitions[model.__name__] = sub
        choices.append({"$ref": f"#/$defs/{model.__name__}"})
    plugin = definitions["PluginSinkConfig"]
    plugin["properties"]["type"]["not"] = {"enum": list(BUILTIN_SINK_CONFIGS)}
    definitions.pop("SinkSettings", None)
    schema["properties"]["sink"] = {"anyOf": choices, "description": "Where secrets go."}
    keys = schema["properties"]["keys"]
    keys["items"] = {"anyOf": [{"$ref": "#/$defs/KeySpec/properties/name"}, keys["items"]]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    return json.dumps(manifest_schema(), indent=2, sort_keys=True) + "\n"
