"""The picture of a recording's timeline (`emotion-predict --timeline --plot FOLDER`): one PNG per file, each class's
probability over time as a stacked area, one lane per speaker, the time between segments (no speech, or another
speaker's turn) left grey."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from emotion.serving.timeline import Timeline, smooth

if TYPE_CHECKING:
    import pandas as pd

#: Where no segment of the lane's speaker is.
NO_SPEECH = "0.88"
#: A segment this close (seconds) after the one before continues its area.
JOIN = 0.05


def plot_timeline(rows: pd.DataFrame, duration: float, title: str) -> Figure:
    """The figure of one file's rows (`emotion.serving.timeline.COLUMNS` and `prob_<class>`), `duration` seconds
    long: a lane per speaker (in order of first speech), each class a colour, stacked to 1 over each segment."""
    columns = [name for name in rows.columns if name.startswith("prob_")]
    speakers = list(dict.fromkeys(rows.sort_values("start")["speaker"]))
    lanes = max(1, len(speakers))
    figure = Figure(figsize=(12, 1.3 * lanes + 1.1), constrained_layout=True)
    axes = figure.subplots(lanes, 1, sharex=True, squeeze=False)[:, 0]
    colours = [f"C{i % 10}" for i in range(len(columns))]
    for ax, speaker in zip(axes, speakers or [""], strict=True):
        ax.set_facecolor(NO_SPEECH)
        ax.set(xlim=(0, max(duration, 1e-3)), ylim=(0, 1), yticks=[0, 0.5, 1])
        ax.set_ylabel(str(speaker), rotation=0, ha="right", va="center")
        own = rows[rows["speaker"] == speaker].sort_values("start")
        for run in _runs(own):
            times, values = _steps(run, columns)
            ax.stackplot(times, values, colors=colours, linewidth=0)
    axes[0].set_title(title, loc="left")
    axes[-1].set_xlabel("seconds")
    handles = [_patch(colour) for colour in colours]
    figure.legend(handles, [name.removeprefix("prob_") for name in columns], loc="outside right center")
    return figure


def _runs(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """A speaker's rows (in time order) cut where a segment starts after a gap: each run is drawn as one area."""
    runs, start, end = [], 0, None
    for position, (first, last) in enumerate(zip(rows["start"], rows["end"], strict=True)):
        if end is not None and first > end + JOIN:
            runs.append(rows.iloc[start:position])
            start = position
        end = last if end is None else max(end, last)
    return [*runs, rows.iloc[start:]] if len(rows) else runs


def _steps(run: pd.DataFrame, columns: Sequence[str]) -> tuple[list[float], list[list[float]]]:
    """The points of a run's stacked area: each segment's probabilities held from its start to its end (a segment
    overlapping the one before starts where that one ends)."""
    times: list[float] = []
    values: list[list[float]] = [[] for _ in columns]
    for _, row in run.iterrows():
        start = max(float(row["start"]), times[-1]) if times else float(row["start"])
        times += [start, max(start, float(row["end"]))]
        for series, name in zip(values, columns, strict=True):
            series += [float(row[name])] * 2
    return times, values


def _patch(colour: str):
    from matplotlib.patches import Patch

    return Patch(color=colour)


def write_plots(found: Timeline, folder: str | Path, segments: int = 1) -> list[Path]:
    """One PNG per file of `found` in `folder` (made if missing), named after the file (`NAME.png`; `NAME-2.png`
    for a second file of that name), probabilities smoothed over `segments` segments (`smooth`); their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = smooth(found.frame, segments)
    written: list[Path] = []
    for file, duration in found.durations.items():
        name, count = Path(file).stem, 1
        while folder / f"{name}{f'-{count}' if count > 1 else ''}.png" in written:
            count += 1
        path = folder / f"{name}{f'-{count}' if count > 1 else ''}.png"
        rows = frame[frame["file"] == file]
        title = Path(file).name + (f" (probabilities averaged over {segments} segments)" if segments > 1 else "")
        plot_timeline(rows, duration, title).savefig(path, dpi=100)
        written.append(path)
    return written
