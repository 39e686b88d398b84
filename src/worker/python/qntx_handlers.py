"""Handler scripts: their decorators, read two ways from one set of rules.

* ``declarations(code)`` reads ``@watch``, ``@schedule`` and ``@handler`` with ``ast``, without
  executing anything, for the plugin's catalog (watchers and schedules for the host).
* At run time the same decorators are plain markers on the functions, and ``choose_entry``
  picks the function a trigger should call.

Both paths normalise decorator arguments with the same functions, so what the catalog
announces and what a run calls can never disagree.
"""

import ast
import inspect
import math

WATCH_FILTERS = {
    "subject": "subjects",
    "subjects": "subjects",
    "predicate": "predicates",
    "predicates": "predicates",
    "context": "contexts",
    "contexts": "contexts",
    "actor": "actors",
    "actors": "actors",
}
DEFAULT_FIRES_PER_SECOND = 1


class DeclarationError(ValueError):
    """A decorator whose arguments the plugin cannot turn into a declaration."""


def _strings(value, what):
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, (set, frozenset)) and all(isinstance(v, str) for v in value):
        values = sorted(value)  # a stable order, so the watcher does not change between reads
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        values = list(value)
    else:
        raise DeclarationError(f"{what} must be a string or a list of strings, got {value!r}")
    if not values or any(not v for v in values):
        raise DeclarationError(f"{what} must not be empty")
    return values


def normalise_watch(args, kwargs):
    """``@watch(predicate, context, ..., subjects=, actors=, max_fires_per_second=)`` -> filters."""
    if len(args) > 2:
        raise DeclarationError("@watch takes at most two positional arguments (predicate, context)")
    filters = {"subjects": [], "predicates": [], "contexts": [], "actors": []}
    for position, value in zip(("predicates", "contexts"), args):
        filters[position] = _strings(value, f"@watch {position[:-1]}")
    rate = DEFAULT_FIRES_PER_SECOND
    for key, value in kwargs.items():
        if key == "max_fires_per_second":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
                raise DeclarationError(f"@watch max_fires_per_second must be a positive integer, got {value!r}")
            rate = value
            continue
        target = WATCH_FILTERS.get(key)
        if target is None:
            raise DeclarationError(f"@watch has no argument {key!r}")
        if filters[target]:
            raise DeclarationError(f"@watch {target} given twice")
        filters[target] = _strings(value, f"@watch {key}")
    if not any(filters.values()):
        raise DeclarationError("@watch needs at least one filter (a predicate, context, subject or actor)")
    return {**filters, "max_fires_per_second": rate}


def normalise_schedule(args, kwargs):
    """``@schedule(every=N, description=..., enabled=True)`` -> interval in whole seconds."""
    if len(args) > 1:
        raise DeclarationError("@schedule takes one positional argument (every)")
    unknown = set(kwargs) - {"every", "description", "enabled"}
    if unknown:
        raise DeclarationError(f"@schedule has no argument {sorted(unknown)[0]!r}")
    if args and "every" in kwargs:
        raise DeclarationError("@schedule every given twice (positionally and as every=)")
    every = args[0] if args else kwargs.get("every")
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every):
        raise DeclarationError(f"@schedule every must be a number of seconds, got {every!r}")
    seconds = round(every)
    if seconds < 1 or seconds > 2**31 - 1:
        raise DeclarationError(f"@schedule every must be between 1 second and 68 years, got {every!r}")
    description = kwargs.get("description", "")
    if not isinstance(description, str):
        raise DeclarationError("@schedule description must be a string")
    enabled = kwargs.get("enabled", True)
    if not isinstance(enabled, bool):
        raise DeclarationError("@schedule enabled must be True or False")
    return {"interval_seconds": seconds, "description": description, "enabled": enabled}


def normalise_handler(args, kwargs):
    """``@handler``, ``@handler()``, ``@handler("name")``, ``@handler(name=..., description=...)``."""
    if len(args) > 1:
        raise DeclarationError("@handler takes at most one positional argument (its name)")
    unknown = set(kwargs) - {"name", "description"}
    if unknown:
        raise DeclarationError(f"@handler has no argument {sorted(unknown)[0]!r}")
    name = args[0] if args else kwargs.get("name")
    if name is not None and not isinstance(name, str):
        raise DeclarationError("@handler name must be a string")
    description = kwargs.get("description", "")
    if not isinstance(description, str):
        raise DeclarationError("@handler description must be a string")
    return {"name": name, "description": description}


NORMALISERS = {"watch": normalise_watch, "schedule": normalise_schedule, "handler": normalise_handler}

# ---------------------------------------------------------------------------------------------
# Reading declarations with ast
# ---------------------------------------------------------------------------------------------


def _decorator_name(node):
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "qntx":
        return target.attr
    return None


def _literal_arguments(node, kind, function):
    if not isinstance(node, ast.Call):
        if kind == "handler":
            return (), {}
        raise DeclarationError(f"@{kind} on {function}() needs arguments, e.g. @{kind}(...)")
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    except ValueError:
        raise DeclarationError(
            f"@{kind} on {function}(), line {node.lineno}: arguments must be literal values "
            "(strings, numbers, lists), because handlers are read without running them"
        ) from None
    if any(kw.arg is None for kw in node.keywords):
        raise DeclarationError(f"@{kind} on {function}(): **kwargs cannot be read without running the code")
    return args, kwargs


def _leading_comment(code):
    lines = []
    for line in code.splitlines():
        stripped = line.strip()
        if stripped.startswith("#!") and not lines:
            continue
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    return " ".join(line for line in lines if line)


def declarations(code, filename="<handler>"):
    """What a handler script declares. Raises SyntaxError or DeclarationError with the reason."""
    tree = ast.parse(code, filename, "exec")
    module_description = ast.get_docstring(tree) or _leading_comment(code)
    watchers, schedules, handlers, functions = [], [], [], []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        functions.append(node.name)
        docstring = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("\n", " ")
        for decorator in node.decorator_list:
            kind = _decorator_name(decorator)
            if kind not in NORMALISERS:
                continue
            args, kwargs = _literal_arguments(decorator, kind, node.name)
            try:
                declared = NORMALISERS[kind](args, kwargs)
            except DeclarationError as exc:
                raise DeclarationError(f"{exc} (on {node.name}(), line {decorator.lineno})") from None
            declared["function"] = node.name
            if kind == "watch":
                watchers.append(declared)
            elif kind == "schedule":
                if any(s["function"] == node.name for s in schedules):
                    raise DeclarationError(f"{node.name}() has more than one @schedule; use one per function")
                declared["description"] = declared["description"] or docstring or module_description
                schedules.append(declared)
            else:
                declared["description"] = declared["description"] or docstring or module_description
                handlers.append(declared)
    if len(handlers) > 1:
        names = ", ".join(h["function"] + "()" for h in handlers)
        raise DeclarationError(f"more than one @handler function: {names}")
    entry = handlers[0]["function"] if handlers else ("main" if "main" in functions else None)
    return {
        "entry": entry,
        "description": (handlers[0]["description"] if handlers else "") or module_description,
        "watchers": watchers,
        "schedules": schedules,
    }


def declarations_json(code, filename):
    """(ok, JSON of declarations or the reason) for the Rust side."""
    import json
    import traceback

    try:
        return True, json.dumps(declarations(code, filename))
    except SyntaxError as exc:
        return False, "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except DeclarationError as exc:
        return False, str(exc)
    except Exception as exc:  # anything else the parser raises (e.g. RecursionError)
        return False, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# Run time: the decorators are markers, and the trigger picks the function
# ---------------------------------------------------------------------------------------------

MARK = "__qntx_declarations__"


def _marker(kind):
    def decorator(*args, **kwargs):
        # Bare @handler (no call) receives the function itself.
        if kind == "handler" and len(args) == 1 and not kwargs and callable(args[0]):
            args[0].__dict__.setdefault(MARK, []).append(("handler", {"name": None, "description": ""}))
            return args[0]
        declared = NORMALISERS[kind](args, kwargs)

        def mark(function):
            function.__dict__.setdefault(MARK, []).append((kind, declared))
            return function

        return mark

    decorator.__name__ = kind
    decorator.__qualname__ = kind
    return decorator


watch = _marker("watch")
schedule = _marker("schedule")
handler = _marker("handler")


def _marked(namespace, kind):
    found = []
    for value in list(namespace.values()):
        for marked_kind, declared in getattr(value, MARK, ()) if callable(value) else ():
            if marked_kind == kind:
                found.append((value, declared))
    return found


def _matches(declared, attestation):
    for key in ("subjects", "predicates", "contexts", "actors"):
        wanted = {v.lower() for v in declared[key]}
        if wanted and not wanted & {str(v).lower() for v in attestation.get(key) or ()}:
            return False
    return True


def _call(function, upstream):
    value = _call_with_upstream(function, upstream)
    # An ``async def`` entry returns a coroutine: run it to completion. asyncio is imported
    # only then: it would add megabytes to every idle worker.
    if inspect.iscoroutine(value):
        import asyncio

        return asyncio.run(value)
    return value


def _call_with_upstream(function, upstream):
    try:
        takes_argument = any(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            for p in inspect.signature(function).parameters.values()
        )
    except (TypeError, ValueError):
        takes_argument = False
    return function(upstream) if takes_argument else function()


def run_entry(namespace, function_name, upstream):
    """Calls what the trigger asks for after the module ran; returns (called, value).

    ``function_name`` set: that function (a watcher or schedule routed by name). Otherwise: the
    ``@handler`` function, else ``main()``, else the ``@watch`` functions whose filters match an
    attestation in ``upstream``, else the only ``@schedule`` function when there is no payload.
    """
    if function_name:
        function = namespace.get(function_name)
        if not callable(function):
            raise LookupError(f"the handler has no function {function_name}() (was it renamed or removed?)")
        return True, _call(function, upstream)
    marked = _marked(namespace, "handler")
    if marked:
        return True, _call(marked[0][0], upstream)
    if callable(namespace.get("main")):
        return True, _call(namespace["main"], upstream)
    if isinstance(upstream, dict):
        matching = [f for f, declared in _marked(namespace, "watch") if _matches(declared, upstream)]
        if matching:
            values = [_call(f, upstream) for f in matching]
            return True, values[0] if len(values) == 1 else {f.__name__: v for f, v in zip(matching, values)}
    if upstream is None:
        schedules = _marked(namespace, "schedule")
        if len(schedules) == 1:
            return True, _call(schedules[0][0], upstream)
    return False, None
