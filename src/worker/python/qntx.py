"""The QNTX host API for Python programs.

``import qntx`` works in every run (Execute, jobs, HTTP), and the same names are globals, so
existing scripts keep working. Every call goes to the host over gRPC from the calling thread
(threads a program starts can use it too) and raises ``qntx.HostError`` (a RuntimeError) whose
message names the call and the host's reason when the host refuses or cannot be reached.
"""

import datetime
import json

import _qntx_host
from qntx_handlers import handler, schedule, watch
from qntx_values import to_json_value

__all__ = [
    "attest", "attest_many", "last", "history", "fetch", "enqueue",
    "create_schedule", "pause_schedule", "resume_schedule", "delete_schedule",
    "watch", "schedule", "handler", "HostError",
]

HostError = _qntx_host.HostError

# Who is running: set by the runtime before each run.
_run = {"handler": None, "glyph_id": ""}


def _strings(value, name, call):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{call}(): {name} must be a string or a list of strings, got {value!r}")


# Bound at import (in the template), so a program that patches json cannot break the API.
_encode = json.JSONEncoder().encode
_decode = json.JSONDecoder().decode
_host_call = _qntx_host.call


def _call(method, request):
    return _decode(_host_call(method, _encode(request)))


def _command(call, subjects, predicates, contexts, actors, attributes):
    subjects = _strings(subjects, "subjects", call)
    if not subjects:
        raise ValueError(f"{call}(): at least one subject is needed")
    contexts = _strings(contexts, "contexts", call)
    # Inside a handler, what it writes carries its name, so "what did X write?" is a query.
    if _run["handler"] and _run["handler"] not in contexts:
        contexts.append(_run["handler"])
    if not contexts:
        raise ValueError(f"{call}(): contexts are required outside a handler")
    if attributes is not None and not isinstance(attributes, dict):
        raise TypeError(f"{call}(): attributes must be a dict, got {type(attributes).__name__}")
    return {
        "subjects": subjects,
        "predicates": _strings(predicates, "predicates", call),
        "contexts": contexts,
        "actors": _strings(actors, "actors", call),
        "attributes": to_json_value(attributes) if attributes is not None else None,
        "glyph_id": _run["glyph_id"],
    }


def attest(subjects, predicates, contexts=None, actors=None, attributes=None):
    """Writes one attestation; returns it as stored (with its id and attributes)."""
    return _call("attest", _command("attest", subjects, predicates, contexts, actors, attributes))


def attest_many(attestations):
    """Writes many in one transaction; each item is a dict of attest()'s arguments. Returns the count."""
    commands = []
    for item in attestations:
        if not isinstance(item, dict):
            raise TypeError(f"attest_many(): each item must be a dict of attest() arguments, got {item!r}")
        commands.append(
            _command(
                "attest_many", item.get("subjects"), item.get("predicates"), item.get("contexts"),
                item.get("actors"), item.get("attributes"),
            )
        )
    return _call("attest_many", {"commands": commands})


def _millis(value, name):
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, str):
        return _millis(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")), name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"history(): {name} must be a datetime, an ISO 8601 string or Unix milliseconds")


def _filter(call, subjects, predicates, contexts, actors, limit=None, since=None, until=None):
    return {
        "subjects": _strings(subjects, "subjects", call),
        "predicates": _strings(predicates, "predicates", call),
        "contexts": _strings(contexts, "contexts", call),
        "actors": _strings(actors, "actors", call),
        "limit": limit,
        "time_start": _millis(since, "since"),
        "time_end": _millis(until, "until"),
    }


def last(subjects=None, predicates=None, contexts=None, actors=None):
    """The newest matching attestation as a dict, or None."""
    found = _call("query", _filter("last", subjects, predicates, contexts, actors, limit=1))
    return found[0] if found else None


def history(subjects=None, predicates=None, contexts=None, actors=None, limit=100, since=None, until=None):
    """Matching attestations, newest first; ``since``/``until`` are inclusive bounds."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("history(): limit must be a non-negative integer (0 = no limit)")
    return _call("query", _filter("history", subjects, predicates, contexts, actors, limit, since, until))


def fetch(url, subjects=None, predicate="http:get", context="", fresh=False):
    """HTTP GET through the host (rate limits, cache); returns {body, status_code, attestation_id}."""
    if not isinstance(url, str) or not url:
        raise ValueError("fetch(): url must be a non-empty string")
    request = {"url": url, "subjects": _strings(subjects, "subjects", "fetch"), "predicate": predicate or "",
               "context": context or "", "fresh": bool(fresh)}
    return _call("fetch", request)


def enqueue(handler, payload=None):
    """Queues a job for one of this plugin's handlers; returns the job id."""
    if not isinstance(handler, str) or not handler:
        raise ValueError("enqueue(): handler must be a non-empty string")
    return _call("enqueue", {"handler": handler, "payload": to_json_value(payload)})


def create_schedule(handler, every, payload=None, description=""):
    """Runs a handler every ``every`` seconds; returns the schedule id."""
    if isinstance(every, bool) or not isinstance(every, (int, float)) or round(every) < 1:
        raise ValueError("create_schedule(): every must be at least 1 second")
    request = {"handler": handler, "interval_seconds": int(round(every)), "payload": to_json_value(payload),
               "description": description}
    return _call("create_schedule", request)


def _schedule_action(action, schedule_id):
    if not isinstance(schedule_id, str) or not schedule_id:
        raise ValueError(f"{action}(): schedule_id must be a non-empty string")
    _call(action, {"schedule_id": schedule_id})


def pause_schedule(schedule_id):
    _schedule_action("pause_schedule", schedule_id)


def resume_schedule(schedule_id):
    _schedule_action("resume_schedule", schedule_id)


def delete_schedule(schedule_id):
    _schedule_action("delete_schedule", schedule_id)
