"""`emotion-predict`: emotions of audio files with a registered model (default `models:/emotion@champion`).

emotion-predict clip.wav other.flac
emotion-predict recordings/ --format csv --output predictions.csv
emotion-predict recordings/ --model models:/emotion/3
emotion-predict recordings/ --on-bad-file error       # stop at the first unreadable or too short file
emotion-predict alice/*.wav --speaker alice            # a speaker-adaptive model: one speaker's clips
emotion-predict recordings/ --speaker-folders          # recordings/SPEAKER/*.wav
emotion-predict --manifest clips.csv                   # columns path and speaker
emotion-predict new.wav --speaker alice                # alice's clips of earlier calls count too (--profiles)
emotion-predict new.wav --speaker alice --read-only    # ... and this one is not added to her profile
emotion-predict --timeline call.mp3 --plot plots/      # a recording of any length: a row per segment of speech
emotion-predict --timeline call.wav --segments call.rttm   # its speakers' turns (pyannote's RTTM, or a CSV)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emotion.cli import fail
from emotion.config import DEFAULT_PROFILES, PROFILES_VARIABLE, logger_defaults
from emotion.data.corpora import AUDIO_SUFFIXES
from emotion.errors import EmotionError
from emotion.serving.files import (
    PartialPredictions,
    audio_files,
    folder_speakers,
    load_recognizer,
    manifest_files,
    predict,
)

if TYPE_CHECKING:  # MLflow and pandas are imported once the arguments are read: `--help` answers at once
    import pandas as pd

FORMATS = ("table", "csv", "json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-predict", description="Predict the emotion of audio files.")
    parser.add_argument("paths", nargs="*", type=Path, help=f"audio files or folders (searched for {AUDIO_SUFFIXES})")
    parser.add_argument(
        "--model",
        default="models:/emotion@champion",
        help="any MLflow model URI, or runs:/RUN_ID for a run's kept checkpoint (default: %(default)s)",
    )
    parser.add_argument("--tracking-uri", default=logger_defaults()["tracking_uri"], help="default: %(default)s")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: %(default)s")
    parser.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="clips per forward pass (default: %(default)s; not for --timeline: it encodes 2 min of speech at once)",
    )
    parser.add_argument(
        "--on-bad-file",
        choices=("skip", "error"),
        default="skip",
        help="skip: predict the other files, warn for each bad one and exit 1; error: stop at the first "
        "(default: %(default)s)",
    )
    speakers = parser.add_argument_group(
        "speakers",
        "a speaker-adaptive model (trained with normalize=speaker) normalises each speaker's clips by "
        "their own statistics; with fewer clips than its minimum, its answer is blended with the non-adaptive "
        "one, and a file of no speaker gets the non-adaptive answer (the `normalization` column says which)",
    )
    given = speakers.add_mutually_exclusive_group()
    given.add_argument("--speaker", help="the speaker of every file given")
    given.add_argument("--speaker-folders", action="store_true", help="each file's speaker is its folder's name")
    given.add_argument("--manifest", type=Path, help="a CSV (or .tsv) of the files: columns path and speaker")
    speakers.add_argument(
        "--min-clips", type=int, help="the clips at which a speaker's own statistics weigh fully (default: the model's)"
    )
    speakers.add_argument(
        "--profiles",
        help="the speaker profiles store, which keeps each speaker's clips across calls (a file path, "
        f"sqlite:///FILE or postgresql://...; `none`: keep none; default: ${PROFILES_VARIABLE}, "
        f"else {DEFAULT_PROFILES}); emotion-profiles lists, exports and forgets them",
    )
    speakers.add_argument(
        "--read-only",
        action="store_true",
        help="read the speakers' profiles without adding these clips to them",
    )
    over_time = parser.add_argument_group(
        "timeline",
        "recordings of any length (a call, an interview), streamed in blocks: one row per segment of speech "
        "(silero-vad's, or --segments), each classified alone; a speaker-adaptive model normalises each "
        "speaker's segments by their own statistics in the recording (no profiles store)",
    )
    over_time.add_argument(
        "--timeline",
        action="store_true",
        help="a row per segment: file, start, end, speaker (--speaker, else the file's name), emotion, ...",
    )
    over_time.add_argument(
        "--segments",
        type=Path,
        help="a diarization whose segments replace the detector's: RTTM (pyannote's output) or a CSV of columns "
        "start, end (seconds), speaker (and file, for several files); implies --timeline",
    )
    over_time.add_argument("--plot", type=Path, help="write a PNG per file into this folder; implies --timeline")
    over_time.add_argument(
        "--smooth",
        type=int,
        default=1,
        help="the PNG shows each class's probability averaged over this many neighbouring segments of the same "
        "speaker (the table keeps each segment's own; default: %(default)s, none)",
    )
    args = parser.parse_args(argv)
    args.timeline = args.timeline or args.segments is not None or args.plot is not None
    if args.smooth < 1:
        parser.error(f"--smooth {args.smooth}: average over 1 segment (none) or more")
    if args.smooth > 1 and args.plot is None:
        parser.error("--smooth smooths the pictures: give --plot FOLDER too")
    if args.segments is not None and (args.speaker is not None or args.speaker_folders or args.manifest):
        parser.error("--segments names the speakers: give it without --speaker, --speaker-folders or --manifest")
    if not args.paths and args.manifest is None:
        parser.error("give audio files or folders, or --manifest")
    if args.paths and args.manifest is not None:
        parser.error("give audio files or folders, or --manifest, not both")
    if args.min_clips is not None and args.min_clips < 1:
        parser.error(f"--min-clips {args.min_clips}: a speaker's statistics need 1 clip at least")
    return args


def files_and_speakers(args: argparse.Namespace) -> tuple[list[Path], list[str | None]]:
    """The files to predict and the speaker of each (None: not given), each name checked as a served request's
    (`emotion.serving.profiles.speaker_name`: a blank one is none)."""
    from emotion.serving.profiles import speaker_name

    if args.manifest is not None:
        files, speakers = manifest_files(args.manifest)
    else:
        files = audio_files(args.paths)
        speakers = folder_speakers(files) if args.speaker_folders else [args.speaker] * len(files)
    names = {speaker: speaker_name(speaker) for speaker in set(speakers)}
    return files, [names[speaker] for speaker in speakers]


def check_writable(output: Path | None) -> None:
    """EmotionError before any work if `--output` cannot be written: its folder is missing, or is read-only."""
    if output is None:
        return
    folder = output.parent if str(output.parent) else Path(".")
    if not folder.is_dir():
        raise EmotionError(f"cannot write --output {output}: no folder {folder}")
    if output.is_dir() or not os.access(folder, os.W_OK):
        raise EmotionError(f"cannot write --output {output}: it is a folder, or its folder is read-only")


def write(text: str, output: Path | None, count: int) -> None:
    """The rendered predictions to standard output, or to `output`, saying how many."""
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    print(f"wrote {count} predictions to {output}", file=sys.stderr)


def render(predictions: pd.DataFrame, fmt: str) -> str:
    """The predictions as an aligned text table, CSV or a JSON list of records."""
    if fmt == "csv":
        return predictions.to_csv(index=False, float_format="%.4f")
    if fmt == "json":
        return json.dumps(predictions.round(4).to_dict(orient="records"), indent=2) + "\n"
    return _text_table(predictions)


def _text_table(predictions: pd.DataFrame) -> str:
    """Text columns left-aligned, probabilities right-aligned with 3 decimals."""
    cells = [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in predictions.itertuples(index=False)
    ]
    columns = list(predictions.columns)
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(columns)]
    numeric = [predictions[name].dtype.kind == "f" for name in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    return "\n".join(line(row).rstrip() for row in [columns, *cells]) + "\n"


def timeline_main(args: argparse.Namespace) -> None:
    """`--timeline`: a row per segment of speech of each file (`emotion.serving.timeline`), and its pictures."""
    from emotion.serving.segments import read_segments
    from emotion.serving.timeline import timelines

    try:
        check_writable(args.output)
        files, speakers = files_and_speakers(args)
        if args.segments is not None:
            read_segments(args.segments)  # a bad line is said before the model loads
        recognizer = load_recognizer(args.model, args.tracking_uri)
        if args.min_clips is not None:
            recognizer.normalizer.min_clips = args.min_clips
        found = timelines(recognizer, files, speakers, args.segments, args.on_bad_file)
        if args.plot is not None:
            from emotion.serving.timeline_plot import write_plots

            pictures = write_plots(found, args.plot, args.smooth)
            print(f"wrote {len(pictures)} picture(s) to {args.plot}: {', '.join(p.name for p in pictures[:3])}"
                  + (", ..." if len(pictures) > 3 else ""), file=sys.stderr)  # fmt: skip
    except PartialPredictions as stopped:  # what was predicted before the failure is kept
        write(render(stopped.predictions, args.format), args.output, len(stopped.predictions))
        fail(str(stopped))
    except EmotionError as exc:
        fail(str(exc))
    rows = found.frame
    empty_table = rows.empty and args.format == "table"
    write("  ".join(rows.columns) + "\n" if empty_table else render(rows, args.format), args.output, len(rows))
    if found.skipped:
        fail(f"skipped {len(found.skipped)} of {len(files)} files (each named above)")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    if args.timeline:
        timeline_main(args)
        return
    try:
        check_writable(args.output)
        files, speakers = files_and_speakers(args)
        recognizer = load_recognizer(args.model, args.tracking_uri)
        from emotion.serving.profiles import open_profiles

        if args.min_clips is not None:
            recognizer.normalizer.min_clips = args.min_clips
        profiles = open_profiles(args.profiles) if recognizer.adaptive else None
        if profiles is not None and recognizer.version is not None:
            profiles.name_model(recognizer.version, args.model)
        predictions, skipped = predict(
            recognizer, files, args.batch_size, args.on_bad_file, speakers, profiles, update=not args.read_only
        )
    except PartialPredictions as stopped:  # what was predicted before the failure is kept
        write(render(stopped.predictions, args.format), args.output, len(stopped.predictions))
        fail(str(stopped))
    except EmotionError as exc:
        fail(str(exc))
    write(render(predictions, args.format), args.output, len(predictions))
    if skipped:
        fail(f"skipped {len(skipped)} of {len(files)} files (each named above)")


if __name__ == "__main__":
    main()
