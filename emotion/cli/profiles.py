"""`emotion-profiles`: the speaker profiles that speaker-adaptive models keep: list, show, export, forget, prune.

emotion-profiles list                                   # every speaker of every model
emotion-profiles list --model models:/emotion@champion  # of one model (its label or its key)
emotion-profiles show alice                             # alice's profiles, per model
emotion-profiles export alice -o alice.json             # all that is held of alice (clip digests, times, sums)
emotion-profiles forget alice                           # remove alice's clips, of every model
emotion-profiles prune --older-than 90                  # drop the profiles unseen for 90 days

Each takes `--profiles PATH_OR_URL` (default: $EMOTION_PROFILES, else the default store).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from emotion.cli import fail
from emotion.config import DEFAULT_PROFILES, PROFILES_VARIABLE
from emotion.errors import EmotionError

if TYPE_CHECKING:
    from emotion.serving.profiles import ProfileStore


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--profiles",
        metavar="PATH_OR_URL",
        help=f"an SQLite file, or a URL (sqlite:///FILE, postgresql://...); default: ${PROFILES_VARIABLE}, "
        f"else {DEFAULT_PROFILES}",
    )
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", metavar="KEY_OR_LABEL", help="only this model: its key, or a label it was given")
    parser = argparse.ArgumentParser(prog="emotion-profiles", description=__doc__.split("\n")[0].split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[store, model], help="every profile: model, speaker, clips, last seen")
    commands.add_parser("show", parents=[store], help="a speaker's profiles, per model").add_argument("speaker")
    forget = commands.add_parser("forget", parents=[store, model], help="remove a speaker's clips")
    forget.add_argument("speaker")
    prune = commands.add_parser("prune", parents=[store], help="drop the profiles unseen for a while")
    prune.add_argument(
        "--older-than", type=float, metavar="DAYS", help="default: $EMOTION_PROFILES_MAX_AGE_DAYS of the store"
    )
    export = commands.add_parser("export", parents=[store], help="all that is held of a speaker, as JSON")
    export.add_argument("speaker")
    export.add_argument("--output", "-o", type=Path, help="write to this file instead of standard output")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    """What the command prints."""
    from emotion.serving.profiles import open_profiles

    store = open_profiles(args.profiles)
    if store is None:
        raise EmotionError("no speaker profiles store to read (`none` keeps no profiles)")
    if args.command == "list":
        return list_profiles(store, args.model)
    if args.command == "prune":
        return prune(store, args.older_than)
    speaker = checked_speaker(args.speaker)
    if args.command == "show":
        return show(store, speaker)
    if args.command == "forget":
        return forget(store, speaker, args.model)
    return export(store, speaker, args.output)


def checked_speaker(value: str) -> str:
    """The name as the store keeps it (stripped); EmotionError if it is none."""
    from emotion.serving.profiles import speaker_name

    name = speaker_name(value)
    if name is None:
        raise EmotionError("give a speaker's name")
    return name


def list_profiles(store: ProfileStore, model: str | None) -> str:
    entries = [e for e in store.speakers() if model is None or model in (e.model, e.label)]
    if not entries:
        return "no speaker profiles" + (f" of model {model}" if model else "")
    rows = [(e.label or e.model, e.speaker, str(e.clips), when(e.last_seen)) for e in entries]
    return table(("model", "speaker", "clips", "last seen"), rows)


def show(store: ProfileStore, speaker: str) -> str:
    entries = [e for e in store.speakers() if e.speaker == speaker]
    if not entries:
        return f"no profile of {speaker}"
    rows = [(e.label or e.model, e.model, str(e.clips), when(e.first_seen), when(e.last_seen)) for e in entries]
    return table(("model", "key", "clips", "first seen", "last seen"), rows)


def forget(store: ProfileStore, speaker: str, model: str | None) -> str:
    if model is None:
        return f"removed {store.forget(speaker)} clips of {speaker}"
    keys = {e.model for e in store.speakers() if e.speaker == speaker and model in (e.model, e.label)}
    removed = sum(store.forget(speaker, key) for key in sorted(keys))
    return f"removed {removed} clips of {speaker} (model {model})"


def prune(store: ProfileStore, older_than: float | None) -> str:
    days = store.max_age_days if older_than is None else older_than
    if days is None:
        raise EmotionError("give --older-than DAYS, or set EMOTION_PROFILES_MAX_AGE_DAYS")
    return f"removed {store.prune(days)} clips of profiles unseen for {days:g} days"


def export(store: ProfileStore, speaker: str, output: Path | None) -> str:
    text = json.dumps(store.export(speaker), indent=2)
    if output is None:
        return text
    try:
        output.write_text(text + "\n")
    except OSError as exc:
        raise EmotionError(f"cannot write {output}: {exc.strerror}") from None
    return f"wrote what is held of {speaker} to {output}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns, clip counts right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        aligned = (
            c.rjust(w) if name == "clips" else c.ljust(w) for c, w, name in zip(cells, widths, header, strict=True)
        )
        return "  ".join(aligned).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def one_line(exc: EmotionError) -> str:
    """The error; when the store failed, with the database's own words (this command's user runs the store)."""
    detail = getattr(exc, "detail", None)
    return f"{exc} ({detail})" if detail else str(exc)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a mistake is one `error:` line on standard error and exit status 1."""
    args = parse_args(argv)
    logging.getLogger("emotion.serving.profile_db").setLevel(logging.ERROR)  # its warnings: in the error line
    try:
        print(run(args))
    except EmotionError as exc:
        fail(one_line(exc))


if __name__ == "__main__":
    main()
