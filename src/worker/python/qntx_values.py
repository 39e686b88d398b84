"""Python values to JSON: one documented mapping, used for every result and every attribute.

It never fails: anything it does not know becomes its repr(). See README "Results".
"""

import base64
import dataclasses
import datetime
import decimal
import enum
import fractions
import math
import pathlib
import uuid

# The answer is encoded with CPython's C encoder, bound here once: a program that replaces
# json.dumps or patches json.JSONEncoder cannot break the answer of its own run. (The runtime's
# modules also look builtins up in a private copy, see runtime.rs.)
from _json import encode_basestring as _encode_string
from _json import make_encoder as _make_encoder


def _not_encodable(value):
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# Arguments: markers (cycles are handled by to_json_value), default, the string encoder, indent,
# key and item separators, sort_keys, skipkeys, allow_nan.
_ENCODE = _make_encoder(None, _not_encodable, _encode_string, None, ": ", ", ", False, False, False)


def dumps(value):
    """JSON text of a value made only of dicts, lists, strings, numbers, booleans and None."""
    return "".join(_ENCODE(value, 0))

_MAX_DEPTH = 64


def to_json_value(value, _depth=0, _seen=None):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Integers outside signed 64 bits become decimal strings: few JSON readers keep them.
        value = int(value)
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if _depth >= _MAX_DEPTH:
        return "<nested too deeply>"
    if _seen is None:
        _seen = set()
    if id(value) in _seen:
        return "<cycle>"
    nested = _depth + 1
    try:
        _seen.add(id(value))
        if isinstance(value, dict):
            return {_json_key(k): to_json_value(v, nested, _seen) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [to_json_value(v, nested, _seen) for v in value]
        if isinstance(value, (set, frozenset)):
            items = [to_json_value(v, nested, _seen) for v in value]
            try:
                return sorted(items)
            except TypeError:
                return items
        if isinstance(value, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(value)).decode("ascii")
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return value.isoformat()
        if isinstance(value, datetime.timedelta):
            return value.total_seconds()
        if isinstance(value, enum.Enum):
            return to_json_value(value.value, nested, _seen)
        if isinstance(value, (decimal.Decimal, fractions.Fraction, uuid.UUID, pathlib.PurePath, complex)):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_json_value(dataclasses.asdict(value), nested, _seen)
        # numpy scalars and arrays, pandas objects and similar expose these conversions.
        for method in ("tolist", "to_dict", "item"):
            convert = getattr(value, method, None)
            if callable(convert) and not isinstance(value, type):
                try:
                    return to_json_value(convert(), nested, _seen)
                except Exception:
                    pass
        return _safe_repr(value)
    except Exception:
        return _safe_repr(value)
    finally:
        _seen.discard(id(value))


def _json_key(key):
    if isinstance(key, str):
        return key
    converted = to_json_value(key)
    return converted if isinstance(converted, str) else dumps(converted)


def _safe_repr(value):
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def to_json_text(value):
    try:
        return dumps(to_json_value(value))
    except Exception as exc:  # only reachable through a bug in the mapping above
        return dumps(f"<result could not be encoded: {exc}>")


