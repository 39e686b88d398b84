"""The Python half of a qntx-python-plugin worker.

The Rust side owns processes, signals and output capture; this module compiles and runs one
program at a time in a fresh ``__main__`` namespace and turns its result into JSON.
"""

import ast
import atexit
import builtins
import faulthandler
import functools
import gc
import io
import json
import linecache
import os
import pathlib
import _signal
import signal
import site
import sys
import traceback
import threading
import types

import qntx
import qntx_rich
from qntx_handlers import run_entry
from qntx_values import to_json_text

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


# sys.path as set up at start; each run starts from it, so nothing a program or a configured
# path added survives into the next run (not even when an interrupt cut a run's cleanup short).
_BASE_PATH = list(sys.path)


# The runtime's own way to set a handler: `_signal.signal` itself gets a tripwire (below).
_set_handler = _signal.signal


def _reset_process_state():
    sys.path[:] = _BASE_PATH
    sys.stdout = sys.__stdout__ = _stream(1)
    sys.stderr = sys.__stderr__ = _stream(2)
    _set_handler(signal.SIGINT, signal.default_int_handler)


def _flush_streams():
    for stream in (sys.stdout, sys.stderr, *_STREAMS.values()):
        try:
            stream.flush()
        except Exception:
            pass


def _includes_system_site_packages(environment):
    """Whether a venv's pyvenv.cfg asks for the base interpreter's packages too."""
    try:
        config = (environment / "pyvenv.cfg").read_text()
    except OSError:
        return False
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


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
        # A declared environment sees its own packages, not those installed into the Python it
        # was made from, as a venv does (unless its pyvenv.cfg includes them): a package the
        # build machine's Python happens to have must not make a run pass here and fail in
        # another environment.
        if not _includes_system_site_packages(pathlib.Path(environment)):
            base = {os.path.realpath(p) for p in site.getsitepackages()}
            sys.path[:] = [p for p in sys.path if os.path.realpath(p) not in base]
        # addsitedir honours .pth files, which Nix environments and editable installs rely on.
        site.addsitedir(str(site_packages))
    _BASE_PATH[:] = sys.path
    _reset_process_state()
    _set_tripwires()
    return sys.version.split()[0]


# The `__main__` module outside runs: each run gets its own and this one is put back after it,
# so nothing of a finished run stays reachable through sys.modules.
_MAIN = sys.modules.get("__main__") or types.ModuleType("__main__")


def preload(modules):
    """Imports the environment's preloaded modules once, in the template: every worker forked
    from it has them warm. Returns [(module, error)] for those that failed: a broken package
    must not take the whole environment down (Health's package check names it too)."""
    import importlib

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed.append((name, f"{type(exc).__name__}: {exc}"))
    return failed


def after_fork():
    """In a worker just forked from the template. `random` reseeds itself at fork; numpy's
    global generator does not, and every worker would otherwise draw the same numbers."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# What the residue check watches (the check itself is Rust: src/worker/residue.rs)
# ---------------------------------------------------------------------------------------------

# Names of functions a run called whose effect has no getter to compare (see _tripwire). The
# residue check watches this list like any other, so one entry retires the worker.
_TRIPPED = []


def _tripwire(module, name):
    """Replaces ``module.name`` with a wrapper that notes the call: for interpreter state that
    can be changed but not read back (the codec registry, at-fork hooks, the wakeup fd)."""
    original = getattr(module, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def noted(*args, **kwargs):
        _TRIPPED.append(name)
        return original(*args, **kwargs)

    setattr(module, name, noted)


def _set_tripwires():
    import _codecs
    import codecs

    # signal.signal goes through _signal.signal. Reading every Python-level handler back
    # (signal.getsignal, 60-odd calls) would cost more than the rest of the check together.
    for module, name in (
        (codecs, "register"),
        (_codecs, "register"),
        (os, "register_at_fork"),
        (_signal, "signal"),
        (_signal, "siginterrupt"),
        (signal, "siginterrupt"),
        (_signal, "set_wakeup_fd"),
        (signal, "set_wakeup_fd"),
    ):
        _tripwire(module, name)
    posix = sys.modules.get("posix")
    if posix is not None:
        _tripwire(posix, "register_at_fork")


def _per_run_state():
    """The runtime's own state, reset at the start of every run: not residue of a run."""
    return [qntx._run, qntx_rich._state, linecache.cache]


def _is_namespace_holder(value):
    return not isinstance(value, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType))


def residue_watch():
    """Collects, once per fresh worker, what a later run could see of an earlier one:

    * namespaces: every module's dict, the dict of every class the collector knows, and the dicts
      and instance dicts held directly by a module or a class;
    * containers: the lists and sets held directly by a module or a class;
    * settings: zero-argument calls whose answers describe interpreter-wide state that lives in
      no dict (sys, gc, atexit, faulthandler, random's state). State with no getter (Python-level
      signal handlers, the codec registry, at-fork hooks) has tripwires instead (_set_tripwires).

    Returns (namespaces, classes, containers, settings, C states): the first three lists of
    (label, object), settings as (labels, a call that reads them all into one tuple, in that
    order), C states as in _c_states.
    """
    # sys.modules is compared by content (each run's __main__ goes in and out of it).
    skip = {id(o) for o in _per_run_state()} | {id(sys.modules)}
    namespaces, containers, seen = [], [], set(skip)

    def holds(label, value):
        if id(value) in seen:
            return
        if type(value) is dict:
            seen.add(id(value))
            namespaces.append((label, value))
        elif type(value) in (list, set):
            seen.add(id(value))
            containers.append((label, value))
        elif _is_namespace_holder(value):
            try:
                attributes = object.__getattribute__(value, "__dict__")
            except Exception:
                return
            if type(attributes) is dict and id(attributes) not in seen:
                seen.add(id(attributes))
                namespaces.append((f"{label} (attributes)", attributes))

    modules = [(n, m) for n, m in list(sys.modules.items()) if isinstance(m, types.ModuleType)]
    for name, module in modules:
        if module is _MAIN:
            continue
        namespace = module.__dict__
        if id(namespace) in seen:
            continue
        seen.add(id(namespace))
        namespaces.append((f"module {name}", namespace))
        for key, value in list(namespace.items()):
            # Import machinery's records of the module, one or two objects per module: half
            # of all that would be watched, for no state a program uses.
            if key not in ("__spec__", "__loader__"):
                holds(f"{name}.{key}", value)
    classes = [o for o in gc.get_objects() if isinstance(o, type)]
    for cls in classes:
        for key, value in list(cls.__dict__.items()):
            if not key.startswith("__") or key in ("__slots__",):
                holds(f"{cls.__module__}.{cls.__qualname__}.{key}", value)
    class_labels = [(f"class {c.__module__}.{c.__qualname__}", c) for c in classes]

    settings = [
        ("the recursion limit", sys.getrecursionlimit),
        ("the thread switch interval", sys.getswitchinterval),
        ("the trace function", sys.gettrace),
        ("the profile function", sys.getprofile),
        ("the async generator hooks", sys.get_asyncgen_hooks),
        ("coroutine origin tracking", sys.get_coroutine_origin_tracking_depth),
        ("whether the garbage collector runs", gc.isenabled),
        ("the garbage collector's thresholds", gc.get_threshold),
        ("the garbage collector's debug flags", gc.get_debug),
        # Not gc.get_freeze_count, which walks every frozen object: an unfreeze shows in the
        # survivor count instead.
        ("the atexit callbacks", atexit._ncallbacks),
        ("faulthandler", faulthandler.is_enabled),
    ]
    for name in ("get_int_max_str_digits", "getdlopenflags"):
        if hasattr(sys, name):
            settings.append((f"sys.{name}", getattr(sys, name)))
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        for tool in range(6):
            settings.append((f"sys.monitoring tool {tool}", functools.partial(monitoring.get_tool, tool)))
    for module, call, label in (
        ("tracemalloc", "is_tracing", "tracemalloc"),
        # Which context object is current; its fields are a C state (_c_states).
        ("decimal", "getcontext", "decimal's context"),
        ("socket", "getdefaulttimeout", "the default socket timeout"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            settings.append((label, getattr(loaded, call)))
    labels = [label for label, _ in settings]
    getters = tuple(getter for _, getter in settings)

    def read_settings():
        return tuple([getter() for getter in getters])

    return namespaces, class_labels, containers, (labels, read_settings), _c_states()


def _c_states():
    """Objects whose state lives in C fields, not in Python objects: (label, object, offset,
    length) of those bytes, which the check compares directly (random.getstate() would build
    625 integers after every run). Only for a fixed-size C base type, checked here."""
    states = []
    random = sys.modules.get("random")
    generator = getattr(random, "_inst", None)
    if generator is not None:
        import _random

        base = _random.Random
        if isinstance(generator, base) and base.__itemsize__ == 0 and base.__basicsize__ > object.__basicsize__:
            start = object.__basicsize__
            states.append(("random's generator state", generator, start, base.__basicsize__ - start))
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        # One mutable C object per thread (precision, rounding, flags, traps, ...).
        context = decimal.getcontext()
        kind = type(context)
        if kind.__module__ == "decimal" and kind.__itemsize__ == 0 and not hasattr(context, "__dict__"):
            start = object.__basicsize__
            states.append(("decimal's context", context, start, kind.__basicsize__ - start))
    return states



# ---------------------------------------------------------------------------------------------
# Running programs
# ---------------------------------------------------------------------------------------------

# Names every program sees as globals: the host API and the handler decorators.
API = {name: getattr(qntx, name) for name in qntx.__all__}
API["qntx"] = qntx


# Frames of the plugin's own modules are not the user's business.
_INTERNAL_FILES = {"qntx_runtime.py", "qntx_handlers.py", "qntx.py", "qntx_values.py", "qntx_rich.py"}


def _format_exception(exc):
    report = traceback.TracebackException.from_exception(exc)
    pending, seen = [report], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        kept = [frame for frame in current.stack if frame.filename not in _INTERNAL_FILES]
        current.stack = traceback.StackSummary.from_list(kept)
        pending.extend(c for c in (current.__cause__, current.__context__) if c is not None)
    return "".join(report.format())


@functools.lru_cache(maxsize=256)
def _compile(code, filename):
    """Compiles the program; a trailing expression becomes the value of the run (as in a notebook)."""
    tree = ast.parse(code, filename, "exec")
    trailing = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        trailing = compile(ast.Expression(tree.body.pop().value), filename, "eval")
    return compile(tree, filename, "exec"), trailing


# A result must fit in the answer (the host accepts 100 MB messages, output included).
MAX_RESULT_BYTES = 32 * 1024 * 1024


def _result_of(value):
    text = to_json_text(value)
    if len(text) > MAX_RESULT_BYTES:
        return "error", "null", (
            f"the result is {len(text)} bytes as JSON, over the limit of {MAX_RESULT_BYTES} bytes: "
            "return a summary, or store the data elsewhere and return where\n"
        )
    qntx_rich.note_result(value)
    return "ok", text, None


def _run_program(code, filename, upstream_json, glyph_id, python_paths, handler_key, entry_function):
    """Runs one program. Returns (status, result_json, error) with status ok/error/interrupted.

    A plain program's value is ``_result`` if set, else its trailing expression. A handler
    (``handler_key`` set) also calls its entry function after the module ran (see
    ``qntx_handlers.run_entry``); then the value is ``_result``, else the entry's return value.
    """
    _reset_process_state()
    # Configured paths go first, for this run only: they never accumulate across runs.
    sys.path[:0] = python_paths
    qntx._run.update(handler=handler_key, glyph_id=glyph_id)
    # Tracebacks show the user's own lines, numbered as the user wrote them.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        try:
            body, trailing = _compile(code, filename)
        except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes, before Python 3.12
            return "error", "null", "".join(traceback.format_exception_only(type(exc), exc))
        module = types.ModuleType("__main__")
        namespace = module.__dict__
        namespace.update(API)
        namespace["__builtins__"] = builtins
        upstream = json.loads(upstream_json) if upstream_json is not None else None
        namespace["upstream"] = upstream
        namespace["glyph_id"] = glyph_id
        sys.modules["__main__"] = module
        try:
            exec(body, namespace)
            value = eval(trailing, namespace) if trailing is not None else None
            if handler_key is not None:
                called, returned = run_entry(namespace, entry_function, upstream)
                if called:
                    value = returned
        except SystemExit as exc:
            code_ = exc.code
            if code_ is None or code_ == 0:
                return _result_of(namespace.get("_result"))
            return "error", "null", f"SystemExit: the program called sys.exit({code_!r})\n"
        except KeyboardInterrupt as exc:
            return "interrupted", "null", _format_exception(exc)
        except BaseException as exc:
            return "error", "null", _format_exception(exc)
        return _result_of(namespace["_result"] if "_result" in namespace else value)
    finally:
        _flush_streams()
        qntx._run.update(handler=None, glyph_id="")
        linecache.cache.pop(filename, None)
        sys.modules["__main__"] = _MAIN
        for path in python_paths:
            try:
                sys.path.remove(path)
            except ValueError:
                pass


def run(*args):
    """Runs one program (see ``_run_program``); also returns the names of threads it started
    that are still running (the worker counts threads at the OS level too: this only names
    them). Everything else a run leaves behind is the residue check's business (residue.rs)."""
    count = threading.active_count()
    before = {thread.ident for thread in threading.enumerate()}
    qntx_rich.begin_run()
    status, result, error = _run_program(*args)
    # The answer carries the value plus the figures the run left open and a table view.
    result = qntx_rich.envelope(result)
    if threading.active_count() <= count:
        return status, result, error, []
    leftovers = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    return status, result, error, leftovers


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
