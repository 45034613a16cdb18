"""Small PNG plots for drop profiles and data cards (matplotlib, Agg canvas, no pyplot state).

Every function takes plain numbers and returns PNG bytes. matplotlib is imported lazily (about a second), so
modules that only might plot do not pay for it. The PNG carries no software version or date, so the same numbers
give the same bytes (releases are byte-identical for the same inputs).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIZE = (6.0, 2.8)  # inches; at 80 dpi a plot is 480x224 pixels, readable in the Dagster UI and on the Hub
_DPI = 80


def _figure(left: float = 0.1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=_SIZE, dpi=_DPI)
    # Fixed margins: a constrained layout would measure every text first and double the drawing time.
    figure.subplots_adjust(left=left, right=0.98, top=0.9, bottom=0.19)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" (matplotlib version) or creation time in the file: the bytes depend on the data only.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def histogram(series: dict[str, Sequence[float]], title: str, xlabel: str, bins: int = 30,
              log_x: bool = False) -> bytes:
    """Overlaid histograms of one or more named series (e.g. characters per document, per kind)."""
    figure = _figure()
    axes = figure.add_subplot()
    arrays = {name: np.asarray([v for v in values if v is not None], dtype=float) for name, values in series.items()}
    arrays = {name: a[np.isfinite(a)] for name, a in arrays.items()}
    everything = np.concatenate([a for a in arrays.values()] or [np.zeros(0)])
    if everything.size == 0:
        axes.text(0.5, 0.5, "no documents", ha="center", va="center", transform=axes.transAxes)
    else:
        low, high = float(everything.min()), float(everything.max())
        if log_x and low > 0 and high > low:
            from matplotlib.ticker import FuncFormatter, NullFormatter

            edges = np.geomspace(low, high, bins + 1)
            axes.set_xscale("log")
            # Plain tick labels (1000, not 10^3): mathtext rendering would cost more than the plot.
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.xaxis.set_minor_formatter(NullFormatter())
        else:
            edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for name, values in arrays.items():
            if values.size:
                # One filled outline per series instead of a rectangle per bin: a fraction of the drawing cost.
                axes.hist(values, bins=edges, histtype="stepfilled", alpha=0.55 if len(arrays) > 1 else 0.9,
                          label=f"{name} ({values.size:,})")
        if len(arrays) > 1:
            axes.legend(fontsize="small")
    axes.set_title(title, fontsize="medium")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("documents")
    return _png(figure)


def bars(labels: Sequence[str], series: dict[str, Sequence[float]], title: str, xlabel: str) -> bytes:
    """Horizontal bars: one group per label, one bar per named series (e.g. documents and tokens per language
    share, or dropped and quarantined per stage)."""
    labels = [str(label) for label in labels]
    # Room for the longest label (stage names, sources) left of the bars.
    figure = _figure(left=min(0.45, 0.05 + 0.0125 * max((len(label) for label in labels), default=0)))
    axes = figure.add_subplot()
    if not labels:
        axes.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=axes.transAxes)
    else:
        positions = np.arange(len(labels))
        height = 0.8 / max(len(series), 1)
        for i, (name, values) in enumerate(series.items()):
            axes.barh(positions + (i - (len(series) - 1) / 2) * height, [float(v or 0) for v in values],
                      height=height, label=name)
        axes.set_yticks(positions, labels, fontsize="small" if len(labels) < 14 else "x-small")
        axes.invert_yaxis()
        if len(series) > 1:
            axes.legend(fontsize="small")
    axes.set_title(title, fontsize="medium")
    axes.set_xlabel(xlabel)
    return _png(figure)


def data_uri(png: bytes) -> str:
    """The PNG as a ``data:`` URI, for Markdown shown in the Dagster UI (no file to serve)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE
