"""The Python half of a qntx-python-plugin worker.

The Rust side owns processes, signals and output capture; this module compiles and runs one
program at a time in a fresh ``__main__`` namespace and turns its result into JSON.
"""

import ast
import builtins
import functools
import io
import json
import linecache
import os
import pathlib
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


def _reset_process_state():
    sys.path[:] = _BASE_PATH
    sys.stdout = sys.__stdout__ = _stream(1)
    sys.stderr = sys.__stderr__ = _stream(2)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
    return sys.version.split()[0]


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
        for path in python_paths:
            try:
                sys.path.remove(path)
            except ValueError:
                pass


def run(*args):
    """Runs one program (see ``_run_program``); also returns the names of threads it started
    that are still running, which would otherwise leak output and CPU into later runs."""
    # A run starts with no thread of an earlier run alive (their workers are replaced), so a
    # higher count after the run means threads of this one are still running.
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
