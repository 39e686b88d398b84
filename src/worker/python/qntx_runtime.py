"""The Python half of a qntx-python-plugin worker.

The Rust side owns processes, signals and output capture; this module compiles and runs one
program at a time in a fresh ``__main__`` namespace and turns its result into JSON.
"""

import ast
import base64
import builtins
import dataclasses
import datetime
import decimal
import enum
import fractions
import io
import json
import linecache
import math
import os
import pathlib
import signal
import site
import sys
import traceback
import types
import uuid

_STREAMS = {}


def _stream(fd):
    """A text stream on fd 1 or 2 (captured by the Rust side), recreated if a program closed it."""
    current = _STREAMS.get(fd)
    if current is None or current.closed:
        current = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            write_through=False,
        )
        _STREAMS[fd] = current
    return current


def _reset_process_state():
    sys.stdout = sys.__stdout__ = _stream(1)
    sys.stderr = sys.__stderr__ = _stream(2)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _flush_streams():
    for stream in (sys.stdout, sys.stderr, *_STREAMS.values()):
        try:
            stream.flush()
        except Exception:
            pass


def setup(environment):
    """Called once at worker start. ``environment`` is a Python prefix (venv or Nix env) or ''."""
    if environment:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site_packages = pathlib.Path(environment) / "lib" / version / "site-packages"
        if not site_packages.is_dir():
            found = sorted(p.name for p in (pathlib.Path(environment) / "lib").glob("python*"))
            raise RuntimeError(
                f"environment {environment} has no {version}/site-packages "
                f"(it has {', '.join(found) or 'no Python'}); the plugin embeds {version}"
            )
        # addsitedir honours .pth files, which Nix environments and editable installs rely on.
        site.addsitedir(str(site_packages))
    _reset_process_state()
    return sys.version.split()[0]


# ---------------------------------------------------------------------------------------------
# Values to JSON: one documented mapping, used for every result and attribute. It never fails:
# anything it does not know becomes its repr().
# ---------------------------------------------------------------------------------------------

_MAX_DEPTH = 64


def to_json_value(value, _depth=0, _seen=None):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Integers beyond 64 bits become decimal strings: few JSON readers keep them exact.
        value = int(value)
        return value if -(2**63) <= value < 2**64 else str(value)
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
    return converted if isinstance(converted, str) else json.dumps(converted)


def _safe_repr(value):
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def to_json_text(value):
    try:
        return json.dumps(to_json_value(value), ensure_ascii=False, allow_nan=False)
    except Exception as exc:  # only reachable through a bug in the mapping above
        return json.dumps(f"<result could not be encoded: {exc}>")


# ---------------------------------------------------------------------------------------------
# Running programs
# ---------------------------------------------------------------------------------------------

API = {}
"""Names every program sees as globals (the qntx host API), filled in by the Rust side."""


def _format_exception(exc, skip_frames):
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None:
            tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _compile(code, filename):
    """Compiles the program; a trailing expression becomes the value of the run (as in a notebook)."""
    tree = ast.parse(code, filename, "exec")
    trailing = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        trailing = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), trailing


def run(code, filename, upstream_json, glyph_id, python_paths):
    """Runs one program. Returns (status, result_json, error) with status ok/error/interrupted."""
    _reset_process_state()
    # Configured paths go first, for this run only: they never accumulate across runs.
    sys.path[:0] = python_paths
    # Tracebacks show the user's own lines, numbered as the user wrote them.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        try:
            body, trailing = _compile(code, filename)
        except SyntaxError as exc:
            return "error", "null", "".join(traceback.format_exception_only(type(exc), exc))
        module = types.ModuleType("__main__")
        namespace = module.__dict__
        namespace.update(API)
        namespace["__builtins__"] = builtins
        namespace["upstream"] = json.loads(upstream_json) if upstream_json is not None else None
        namespace["glyph_id"] = glyph_id
        sys.modules["__main__"] = module
        try:
            exec(body, namespace)
            value = eval(trailing, namespace) if trailing is not None else None
        except SystemExit as exc:
            code_ = exc.code
            if code_ is None or code_ == 0:
                return "ok", to_json_text(namespace.get("_result")), None
            return "error", "null", f"SystemExit: the program called sys.exit({code_!r})\n"
        except KeyboardInterrupt as exc:
            return "interrupted", "null", _format_exception(exc, 1)
        except BaseException as exc:
            return "error", "null", _format_exception(exc, 1)
        result = namespace["_result"] if "_result" in namespace else value
        return "ok", to_json_text(result), None
    finally:
        _flush_streams()
        linecache.cache.pop(filename, None)
        for path in python_paths:
            try:
                sys.path.remove(path)
            except ValueError:
                pass


def check_modules(modules):
    """Imports each module; returns [(module, version or None, error or None)]."""
    import importlib
    import importlib.metadata

    report = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:
            report.append((name, None, f"{type(exc).__name__}: {exc}"))
            continue
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except Exception:
                version = "unknown"
        report.append((name, str(version), None))
    return report
