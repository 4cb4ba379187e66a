"""Helpers for tests that play the attacker: edit a record as it is stored."""

from __future__ import annotations

import hashlib
import json

from faceveil.format import auth
from faceveil.format.records import Record


def flat(record: Record) -> dict:
    """A record's body with its ``mac`` beside the fields, as the edits below see it (a
    deep copy: editing it changes nothing)."""
    out = json.loads(json.dumps(record.body))
    out["mac"] = auth.wire(record)["mac"]
    return out


def stored(fields: dict) -> dict:
    """The stored form (envelope) of a flat record, its digest recomputed: what an
    attacker who edits a file without the key can write."""
    fields = json.loads(json.dumps(fields))
    mac = fields.pop("mac", None)
    text = auth.body_text(fields)
    return {"format": fields.get("format"), "version": fields.get("version"), "record": text,
            "digest": hashlib.sha256(text.encode()).hexdigest(), "mac": mac}


def rewrite(record: Record, edit) -> dict:
    """An attacker's edit of a record (``edit(fields)`` changes the flat record in place),
    stored again with a recomputed (unkeyed) digest."""
    fields = flat(record)
    edit(fields)
    return stored(fields)
