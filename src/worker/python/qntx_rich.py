"""Rich results: the figures a run left open and a table view of a tabular result.

A run's answer is ``{"value": <the result's JSON>}`` plus, only when there is something to show,
``"figures"`` (matplotlib figures still open at the end, as PNG) and ``"table"`` (a pandas
DataFrame/Series or a numpy array result, as columns and first rows). The glyph shows them;
``result`` itself is unchanged, so the fields the host reads are the same with or without them.

Nothing here imports matplotlib, pandas or numpy: a run that did not import them has nothing to
show, and looking them up in ``sys.modules`` costs nothing, so plain programs pay nothing.
"""

import base64
import io
import os
import sys

from qntx_values import dumps as _dumps
from qntx_values import to_json_value

# Workers have no display: a GUI backend would try to open windows from a worker process.
# A program (or the environment) can still choose another backend explicitly.
os.environ.setdefault("MPLBACKEND", "agg")

# Kept at import, so a program that replaces base64's functions cannot break the answer.
_b64 = base64.b64encode

# Figures are returned until their PNGs reach this size; the rest are named, not sent.
MAX_FIGURE_BYTES = 8 * 1024 * 1024
MAX_FIGURES = 20
# Rows of a table view (the total count is given too).
TABLE_ROWS = 50
TABLE_COLUMNS = 50


# The table view of the current run's result, between note_result and envelope.
_state = {"table": None}


def begin_run():
    """Forgets anything a run cut short (by an interrupt in the runtime) left for the next."""
    _state["table"] = None
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        try:
            if pyplot.get_fignums():
                pyplot.close("all")
        except Exception:
            pass


def note_result(value):
    """Remembers the table view of the run's result value, if it has one."""
    try:
        _state["table"] = table_of(value)
    except Exception as exc:  # a broken __len__ or dtype must not fail the run
        _state["table"] = {"error": f"no table view: {type(exc).__name__}: {exc}"}


def envelope(value_json):
    """The run's answer: the value's JSON, and the figures and table when there are any.

    Always closes the run's figures and forgets its table, so nothing reaches the next run.
    """
    table, _state["table"] = _state["table"], None
    extras = {}
    figures = take_figures()
    if figures:
        extras["figures"] = figures
    if table is not None:
        extras["table"] = table
    text = '{"value":' + value_json
    if extras:
        text += "," + _dumps(extras)[1:-1]
    return text + "}"


def take_figures():
    """PNGs of the figures pyplot holds open (then closed), in figure-number order."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    try:
        numbers = list(pyplot.get_fignums())
    except Exception:
        return []
    figures, budget = [], MAX_FIGURE_BYTES
    try:
        for position, number in enumerate(numbers):
            entry = {"number": number}
            if position >= MAX_FIGURES:
                entry["error"] = f"not returned: a run returns at most {MAX_FIGURES} figures"
                figures.append(entry)
                continue
            try:
                figure = pyplot.figure(number)
                entry["label"] = figure.get_label() or ""
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png")
                png = buffer.getvalue()
                width, height = (round(v) for v in figure.get_size_inches() * figure.dpi)
            except Exception as exc:
                entry["error"] = f"cannot draw the figure: {type(exc).__name__}: {exc}"
                figures.append(entry)
                continue
            if len(png) > budget:
                entry["error"] = (
                    f"not returned: the run's figures exceed {MAX_FIGURE_BYTES // (1024 * 1024)} MiB "
                    "of PNG; save large figures to files instead"
                )
            else:
                budget -= len(png)
                entry.update(format="png", width=width, height=height, data=_b64(png).decode("ascii"))
            figures.append(entry)
    finally:
        try:
            pyplot.close("all")
        except Exception:
            pass
    return figures


def table_of(value):
    """A table view of a DataFrame, Series or numpy array (1 or 2 dimensions), else None."""
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if isinstance(value, pandas.DataFrame):
            return _frame_table("DataFrame", value)
        if isinstance(value, pandas.Series):
            return _frame_table("Series", value.to_frame(name=value.name if value.name is not None else "value"))
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray) and value.ndim in (1, 2):
        rows = value.reshape(-1, 1) if value.ndim == 1 else value
        shown = rows[:TABLE_ROWS, :TABLE_COLUMNS]
        columns = ["value"] if value.ndim == 1 else [str(i) for i in range(rows.shape[1])]
        return {
            "kind": "ndarray",
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "columns": columns[:TABLE_COLUMNS],
            "index": list(range(len(shown))),
            "rows": to_json_value(shown.tolist()),
            "total_rows": int(rows.shape[0]),
            "total_columns": int(rows.shape[1]),
        }
    return None


def _frame_table(kind, frame):
    shown = frame.iloc[:TABLE_ROWS, :TABLE_COLUMNS]
    return {
        "kind": kind,
        "columns": [to_json_value(c) for c in shown.columns],
        "dtypes": [str(t) for t in shown.dtypes],
        "index": [to_json_value(i) for i in shown.index],
        "rows": [[to_json_value(v) for v in row] for row in shown.itertuples(index=False, name=None)],
        "total_rows": int(frame.shape[0]),
        "total_columns": int(frame.shape[1]),
    }
