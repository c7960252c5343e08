"""Recordings of any length decoded in bounded memory, for timelines (`emotion.serving.timeline`).

`stream` decodes a file block by block (`soundfile.SoundFile.blocks`), each block resampled as a clip is
(`emotion.data.audio.resample`) with a few samples of its neighbours around it, so the blocks join exactly as the
whole file resampled at once; `scan` reads it once at 16 kHz for silero-vad's speech probability and the level of
each 32 ms frame; `cut` reads it again, keeping only the samples of some stretches. None holds more than a block of
the file at a time (`BLOCK_SECONDS`) besides what it returns.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emotion.data.audio import MAX_RATIO_TERMS, check_sample_rate, resample
from emotion.errors import DataError

#: The rate silero-vad listens at, and its frame there (32 ms): one speech probability and one level a frame.
VAD_RATE = 16_000
FRAME = 512
FRAME_SECONDS = FRAME / VAD_RATE
#: How much of a file is decoded at a time (seconds).
BLOCK_SECONDS = 10.0


@dataclass
class Scan:
    """What one streamed pass over a file found: its duration, and per 32 ms frame its speech probability
    (silero-vad's; None when not asked) and its level (dB relative to full scale)."""

    duration: float
    speech: list[float] | None
    levels: np.ndarray = field(repr=False)


def resampling_ratio(rate: int, target: int) -> tuple[int, int]:
    """The reduced (input, output) sample counts `emotion.data.audio.resample` resamples `rate` to `target` by
    (a ratio of too many terms approximated as it does): every `input` samples in make exactly `output` out."""
    ratio = Fraction(int(rate), int(target))
    if ratio.numerator * ratio.denominator > MAX_RATIO_TERMS:
        ratio = ratio.limit_denominator(math.isqrt(int(MAX_RATIO_TERMS / ratio)))
    return ratio.numerator, ratio.denominator


def stream(path: str | Path, rate: int, block_seconds: float = BLOCK_SECONDS) -> Iterator[torch.Tensor]:
    """The file's mono float32 samples at `rate`, in consecutive blocks of about `block_seconds`: decoded with
    soundfile block by block (`SoundFile.blocks`) and each block resampled as `emotion.data.audio.resample` does,
    with enough of its neighbours' samples around it that the blocks join as the whole file resampled at once.

    DataError naming the file if it cannot be decoded, has a sample rate out of bounds, no samples, or samples
    that are not finite numbers.
    """
    name = f"audio file {path}"
    try:
        with sf.SoundFile(str(path)) as audio:
            check_sample_rate(audio.samplerate, name)
            file_rate = int(audio.samplerate)
            step, _ = resampling_ratio(file_rate, rate)
            size = step * max(1, math.ceil(block_seconds * file_rate / step))
            blocks = (mono(block, name) for block in audio.blocks(blocksize=size, dtype="float32", always_2d=True))
            count = 0
            for block in resampled(blocks, file_rate, rate):
                count += len(block)
                yield block
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "it", str(exc))  # no Python object in the message
        raise DataError(f"cannot decode {name}: {reason}") from exc
    if count == 0:
        raise DataError(f"{name} has no samples")


def mono(block: np.ndarray, name: str) -> np.ndarray:
    """A decoded (frames, channels) block as mono samples (the channels' mean); DataError if any is not finite."""
    samples = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise DataError(f"{name} holds samples that are not finite numbers (NaN or infinity)")
    return np.ascontiguousarray(samples)


def resampled(blocks: Iterator[np.ndarray], rate: int, target: int) -> Iterator[torch.Tensor]:
    """Consecutive blocks at `rate` (each but the last a whole number of the ratio's input steps) resampled to
    `target`, each with `context` samples of its neighbours on both sides, then cut to its own span."""
    if rate == target:
        yield from (torch.from_numpy(block) for block in blocks)
        return
    step, out = resampling_ratio(rate, target)
    # torchaudio's kernel reaches about 6 input samples (6 x the ratio when downsampling) either side: more than enough
    context = step * math.ceil((8 * max(1.0, step / out) + 16) / step)
    before = np.empty(0, dtype=np.float32)
    current: np.ndarray | None = None
    for block in blocks:
        if current is not None:
            yield middle(before, current, block[:context], rate, target)
            before = np.concatenate([before, current])[-context:]
        current = block
    if current is not None:
        yield middle(before, current, None, rate, target)


def middle(before: np.ndarray, block: np.ndarray, after: np.ndarray | None, rate: int, target: int) -> torch.Tensor:
    """`block` resampled between its context (`after` None: the file's end), the context's samples cut away."""
    step, out = resampling_ratio(rate, target)
    parts = [before, block] if after is None else [before, block, after]
    waves = resample(torch.from_numpy(np.concatenate(parts)), rate, target)
    first = len(before) // step * out
    if after is None:
        return waves[first:].clone()
    return waves[first : first + len(block) // step * out].clone()


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside (silero-vad's small steps run 10 times slower on two), as it was after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.cache
def vad_model() -> torch.nn.Module:
    """silero-vad's model, from the file its wheel ships (nothing downloaded)."""
    with one_thread(), warnings.catch_warnings():  # importing silero_vad sets torch to one thread for good
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
        from silero_vad import load_silero_vad

        return load_silero_vad()


def scan(path: str | Path, detect: bool = True, block_seconds: float = BLOCK_SECONDS) -> Scan:
    """One streamed pass over the file at 16 kHz: its duration and each frame's level, and where `detect`, each
    frame's speech probability (silero-vad, its state carried from frame to frame)."""
    model = vad_model() if detect else None
    speech: list[float] = []
    levels: list[np.ndarray] = []
    rest = torch.zeros(0)
    samples = 0
    with one_thread(), torch.no_grad(), _seconds_bar(path, "finding speech" if detect else "reading") as bar:
        if model is not None:
            model.reset_states()
        for block in stream(path, VAD_RATE, block_seconds):
            samples += len(block)
            joined = torch.cat([rest, block])
            whole = len(joined) // FRAME * FRAME
            frames, rest = joined[:whole].view(-1, FRAME), joined[whole:]
            _frames_into(frames, model, speech, levels)
            bar.update(min(len(block) / VAD_RATE, bar.total - bar.n))  # the header rounds the duration
        if len(rest):
            _frames_into(torch.nn.functional.pad(rest, (0, FRAME - len(rest))).view(1, FRAME), model, speech, levels)
    return Scan(samples / VAD_RATE, speech if detect else None, np.concatenate(levels) if levels else np.zeros(0))


def _frames_into(frames: torch.Tensor, model: torch.nn.Module | None, speech: list[float], levels: list) -> None:
    power = frames.double().square().mean(dim=1)
    levels.append((10 * torch.log10(power.clamp_min(1e-12))).numpy())
    if model is not None:
        speech.extend(float(model(frame, VAD_RATE)) for frame in frames)


@contextmanager
def _seconds_bar(path: str | Path, what: str) -> Iterator:
    """A progress bar over a long file's seconds (none for a file under two minutes, or one not read)."""
    from tqdm.auto import tqdm

    try:
        seconds = sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, OSError):
        seconds = 0.0
    with tqdm(total=seconds, unit="s", desc=f"{what} in {Path(path).name}", disable=seconds < 120,
              file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s") as bar:  # fmt: skip
        yield bar


def cut(path: str | Path, spans: Sequence[tuple[float, float]], rate: int) -> list[torch.Tensor]:
    """The samples at `rate` of each (start, end) span (seconds), in the spans' order (`cut_each`, all at once)."""
    waves = dict(cut_each(path, spans, rate))
    return [waves[index] for index in range(len(spans))]


def cut_each(
    path: str | Path, spans: Sequence[tuple[float, float]], rate: int, block_seconds: float = BLOCK_SECONDS
) -> Iterator[tuple[int, torch.Tensor]]:
    """Each (start, end) span's index and samples at `rate`, as soon as the stream (`stream`, block by block) has
    passed its end: only the spans under way are held. A span past the file's end holds what the file had."""
    bounds = [(round(start * rate), round(end * rate)) for start, end in spans]
    waiting = deque(sorted(range(len(bounds)), key=lambda index: bounds[index]))
    under_way: dict[int, list[torch.Tensor]] = {}
    position = 0
    for block in stream(path, rate, block_seconds):
        begin, position = position, position + len(block)
        while waiting and bounds[waiting[0]][0] < position:
            under_way[waiting.popleft()] = []
        for index in list(under_way):
            start, end = bounds[index]
            if end > begin:
                under_way[index].append(block[max(start, begin) - begin : min(end, position) - begin].clone())
            if end <= position:
                yield index, _joined(under_way.pop(index))
        if not waiting and not under_way:
            return
    for index in [*under_way, *waiting]:
        yield index, _joined(under_way.get(index, []))


def _joined(pieces: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(pieces) if pieces else torch.zeros(0)


def duration(path: str | Path) -> float:
    """The file's duration (seconds) from its header; DataError naming it if it cannot be read."""
    try:
        return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"cannot decode audio file {path}: {exc}") from exc
