"""Building blocks of both OpenAPI 3.1 documents (the agent's and the server's).

Request and response schemas come from the pydantic models (so a document and the
validation cannot disagree); each API writes only its paths table and calls `document`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"
NDJSON = "application/x-ndjson"
TAR = "application/x-tar"

STRING: dict = {"type": "string"}
BINARY: dict = {"type": "string", "format": "binary"}
ANY: dict = {"type": "object", "additionalProperties": True}
LIST: dict = {"type": "array", "items": ANY}
COUNT: dict = {"type": "integer", "minimum": 0, "maximum": 2**53}
FLAG: dict = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}
NEXT: dict = {"type": ["string", "null"], "description": "?before= for the next page; null: last"}

ERROR: dict = {
    "type": "object",
    "description": "Every error: what went wrong and a stable reason word (bad_FIELD, ...).",
    "required": ["message", "reason"],
    "properties": {
        "message": STRING,
        "reason": STRING,
        "errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": STRING, "rule": STRING}},
        },
    },
    "additionalProperties": True,
}


def ref(model: type[BaseModel] | str) -> dict:
    """A reference to a schema of the document's components, by model or by name."""
    return {"$ref": REF.format(model=model if isinstance(model, str) else model.__name__)}


def obj(required: Iterable[str] | None = None, **props: dict) -> dict:
    """An object with these fields (all required unless named); more fields are allowed."""
    return {
        "type": "object",
        "properties": props,
        "required": sorted(props if required is None else required),
        "additionalProperties": True,
    }


def query(name: str, schema: dict, about: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": about,
    }


OFFSET = query("offset", COUNT, "Bytes of the log already read.")
FOLLOW = query("follow", FLAG, "Keep the stream open until the end (1, true or yes).")
PATH = query(
    "path", {"type": "string", "minLength": 1}, "Absolute, or relative to the workdir.", True
)


def json_content(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def model_schemas(
    bodies: Iterable[type[BaseModel]], answers: Iterable[type[BaseModel]] = ()
) -> dict[str, dict]:
    """The components' schemas of the request bodies (as validated) and the answers (as sent),
    with the one Error schema."""
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies] + [(m, "serialization") for m in answers],
        ref_template=REF,
    )
    return {**defs.get("$defs", {}), "Error": ERROR}


def document(
    title: str,
    version: str,
    description: str,
    schemas: dict,
    paths: dict,
    schemes: dict,
    security: list[dict],
    **more: object,
) -> dict:
    """An OpenAPI 3.1 document: info, components (schemas, security schemes) and paths."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        **more,
        "components": {"schemas": schemas, "securitySchemes": schemes},
        "security": security,
        "paths": paths,
    }
