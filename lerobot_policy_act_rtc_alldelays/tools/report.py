"""Writing a tool's results: one markdown table format, JSON, and optional PNG figures.

Every tool reports through these functions, so a missing matplotlib (the `plots` extra) is handled one way
everywhere: the figure is skipped with a warning and the markdown and JSON are still written.
"""

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def format_value(value: Any, digits: int = 2) -> str:
    """A table cell: floats rounded to `digits`, None as '-', anything else as `str`."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub markdown table; cells go through `format_value`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(format_value(cell, digits) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None (with a warning) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        logging.warning(
            "matplotlib is not installed (pip install 'lerobot_policy_act_rtc_alldelays[plots]'): no figure "
            "written; the markdown and JSON are."
        )
        return None
    return plt


def write_report(
    output_dir: Path,
    name: str,
    data: Any,
    markdown: str,
    figures: dict[str, Callable[[Any], Any]] | None = None,
) -> list[Path]:
    """Writes `<name>.json` (the data), `<name>.md` and one PNG per figure into `output_dir`.

    `figures` maps a file stem to a function that draws on the pyplot module it is given and returns the
    figure; figures are skipped when matplotlib is missing. Returns the paths written.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [output_dir / f"{name}.json", output_dir / f"{name}.md"]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    written[1].write_text(markdown.rstrip() + "\n")
    plt = pyplot() if figures else None
    if plt is not None:
        for stem, draw in figures.items():
            figure = draw(plt)
            path = output_dir / f"{stem}.png"
            figure.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
    return written
