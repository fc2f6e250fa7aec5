"""What Microsoft's Service Bus emulator accepts in its Config.json, for the queues Relay declares.

The emulator reads ``/ServiceBus_Emulator/ConfigFiles/Config.json`` once at start and, on a bad file, fails
inside a container that has no shell to debug it from. No offline package ships its schema, so this is the
subset Relay uses (one namespace, queues, logging), written from the emulator's documentation: names and
types as documented, the documented limits (MaxDeliveryCount 1-10, lock PT5S-PT5M, TTL PT5M-PT1H,
duplicate window PT5S-PT5M, 50 entities), and closed objects so that a misspelt property (which the
emulator would just not apply) fails here.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

NAMESPACE = "sbemulatorns"  # the only namespace name the emulator accepts
CONFIG_MOUNT = "/ServiceBus_Emulator/ConfigFiles/Config.json"

_ENTITY_NAME = r"^[A-Za-z0-9]$|^[A-Za-z0-9][\w\-./]*[A-Za-z0-9]$"
_DURATION = r"^P(?!$)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
_FORWARD = {"type": "string", "pattern": rf"^$|{_ENTITY_NAME}"}

QUEUE_PROPERTIES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "DeadLetteringOnMessageExpiration": {"type": "boolean"},
        "DefaultMessageTimeToLive": {"type": "string", "pattern": _DURATION},
        "DuplicateDetectionHistoryTimeWindow": {"type": "string", "pattern": _DURATION},
        "ForwardDeadLetteredMessagesTo": _FORWARD,
        "ForwardTo": _FORWARD,
        "LockDuration": {"type": "string", "pattern": _DURATION},
        "MaxDeliveryCount": {"type": "integer", "minimum": 1, "maximum": 10},
        "RequiresDuplicateDetection": {"type": "boolean"},
        "RequiresSession": {"type": "boolean"},
    },
}

CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["UserConfig"],
    "additionalProperties": False,
    "properties": {
        "UserConfig": {
            "type": "object",
            "required": ["Namespaces", "Logging"],
            "additionalProperties": False,
            "properties": {
                "Namespaces": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Name", "Queues", "Topics"],
                        "additionalProperties": False,
                        "properties": {
                            "Name": {"const": NAMESPACE},
                            "Queues": {
                                "type": "array",
                                "maxItems": 50,
                                "items": {
                                    "type": "object",
                                    "required": ["Name", "Properties"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "Name": {"type": "string", "pattern": _ENTITY_NAME},
                                        "Properties": QUEUE_PROPERTIES,
                                    },
                                },
                            },
                            # Relay declares no topics; an empty list is still required.
                            "Topics": {"type": "array", "maxItems": 0},
                        },
                    },
                },
                "Logging": {
                    "type": "object",
                    "required": ["Type"],
                    "additionalProperties": False,
                    "properties": {"Type": {"enum": ["File", "Console", "File,Console", "Console,File"]}},
                },
            },
        }
    },
}

# Documented limits, in seconds: (minimum, maximum).
DURATION_LIMITS = {
    "DefaultMessageTimeToLive": (5 * 60, 60 * 60),
    "DuplicateDetectionHistoryTimeWindow": (5, 5 * 60),
    "LockDuration": (5, 5 * 60),
}


def duration_seconds(value: str) -> int:
    """An ISO 8601 duration of days and time (``PT1M``, ``P1DT2H``) in seconds."""
    match = re.fullmatch(_DURATION, value)
    assert match, f"not an ISO 8601 duration: {value!r}"
    days, hours, minutes, secs = (int(group or 0) for group in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def queues(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The declared queues' properties, by queue name."""
    (namespace,) = config["UserConfig"]["Namespaces"]
    return {q["Name"]: q["Properties"] for q in namespace["Queues"]}


def validate(config: dict[str, Any]) -> None:
    """Raise ``AssertionError`` or ``jsonschema.ValidationError`` if the emulator would reject the file
    or silently ignore part of it."""
    jsonschema.Draft202012Validator(CONFIG).validate(config)
    declared = queues(config)
    assert len(declared) == len(config["UserConfig"]["Namespaces"][0]["Queues"]), "duplicate queue names"
    for name, properties in declared.items():
        for field, (low, high) in DURATION_LIMITS.items():
            if field in properties:
                seconds = duration_seconds(properties[field])
                assert low <= seconds <= high, f"{name}.{field}={properties[field]} is outside [{low}s, {high}s]"
        for field in ("ForwardTo", "ForwardDeadLetteredMessagesTo"):
            target = properties.get(field, "")
            assert target in {"", *declared} - {name}, f"{name}.{field} names no other declared queue: {target!r}"
