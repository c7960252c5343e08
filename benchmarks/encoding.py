"""Whisper encoding side by side: seconds per clip, peak memory and the pooled features' distance, per variant.

Every variant encodes the same seeded subset of SAVEE clips (decoded and trimmed once, as `features=ssl` prepares
them: decoding is not timed), with `whisper_input=cut`, in one run, interleaved round-robin (each round times
every variant once, in turn), so that a busy machine slows them alike:

- `transformers_eager`: the plain framework, one clip at a time: `WhisperFeatureExtractor` on the clip (it
  pads to 30 s), then transformers' Whisper encoder with `attn_implementation="eager"` on the clip's frames
  (the conv front end, the position embeddings cut to them, the six layers), each layer mean-pooled;
- `previous`: the project's path before this benchmark (the extractor on 30 s, SDPA with an additive mask on
  every batch), in batches of 60 s of audio, as `features=ssl` runs it (`git show 342bfd6:...`, copied);
- `fp32`, `bf16`: today's path (`WhisperLogMel` on the clip's frames only, no mask on clips of one length),
  batched by length as `features=ssl` does (60 s of audio a batch), in float32 or under bfloat16 autocast;
- `fp32_1`, `bf16_1`: the same, one clip a forward pass (what a request of one clip costs).

Per variant: seconds per clip (the median round), its ratio to `transformers_eager`, the peak resident memory
of a fresh process that loads the encoder and encodes the clips that way, and the largest absolute difference
of the pooled layer means from `transformers_eager`'s (float32).

HF_HUB_OFFLINE=1 python -m benchmarks.encoding --clips 120 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import machine, peak_rss_mb
from emotion.data.corpora import read_corpus
from emotion.data.features import Spectral
from emotion.data.frontend import AudioFrontEnd
from emotion.data.ssl import SSLLayers
from emotion.data.windows import Window
from emotion.encoders.huggingface import WhisperEncoderLayers, load_huggingface

HERE = Path(__file__).resolve().parent
PREVIOUS = "342bfd6"  # the commit whose Whisper path `previous` runs
BATCH_SAMPLES = 60 * 16000
VARIANTS = ("transformers_eager", "previous", "fp32", "bf16", "fp32_1", "bf16_1")
Encode = Callable[[list[torch.Tensor]], torch.Tensor]


def savee_clips(corpus: Path, count: int, encoder: str) -> list[torch.Tensor]:
    """`count` SAVEE clips drawn with seed 0, decoded and trimmed as `features=ssl` prepares them."""
    clips = read_corpus(corpus, "savee").clips
    chosen = random.Random(0).sample(clips, min(count, len(clips)))
    front_end = AudioFrontEnd(SSLLayers(Spectral(), encoder=encoder, whisper_input="cut", window=Window()))
    return [front_end.clip(clip, "error") for clip in chosen]


def previous_module() -> types.ModuleType:
    """The project's Whisper module as it was at `PREVIOUS`, run from its text in git."""
    source = subprocess.run(["git", "show", f"{PREVIOUS}:emotion/encoders/huggingface.py"], cwd=HERE.parent,
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    module = types.ModuleType("previous_huggingface")
    sys.modules[module.__name__] = module
    exec(compile(source, "previous_huggingface.py", "exec"), module.__dict__)
    return module


@torch.no_grad()
def transformers_eager(encoder: WhisperEncoderLayers) -> Encode:
    """transformers' feature extractor and eager-attention encoder, one clip at a time, each layer mean-pooled."""
    from transformers import WhisperModel

    eager = WhisperModel.from_pretrained(
        encoder.folder, dtype=torch.float32, attn_implementation="eager"
    ).encoder.eval()

    @torch.no_grad()
    def encode(waves: list[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for wave in waves:
            log_mel = encoder.extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features
            hops = -(-len(wave) // encoder.hop_length)
            frames = 2 * -(-hops // 2)
            x = F.gelu(eager.conv2(F.gelu(eager.conv1(log_mel[:, :, :frames])))).permute(0, 2, 1)
            x = x + eager.embed_positions.weight[: x.shape[1]]
            layers = [x]
            for layer in eager.layers:
                x = layer(x, None)
                layers.append(x)
            layers[-1] = eager.layer_norm(x)
            pooled.append(torch.stack([layer[0].mean(dim=0) for layer in layers]))
        return torch.stack(pooled)

    return encode


def project_path(encoder: object, precision: str, batch_samples: int) -> Encode:
    """`Encoder.pooled_statistics` (the layers' means) of an encoder, in a precision and a batch budget."""

    def encode(waves: list[torch.Tensor]) -> torch.Tensor:
        encoder.precision = precision
        return encoder.pooled_statistics(waves, batch_samples)[0]

    return encode


def variants(source: str, names: tuple[str, ...]) -> dict[str, Encode]:
    """Each named variant's encoding function (one loaded model shared by those that run transformers' SDPA)."""
    encoder = load_huggingface(source, "cut")
    assert isinstance(encoder, WhisperEncoderLayers)
    made: dict[str, Encode] = {}
    for name in names:
        if name == "transformers_eager":
            made[name] = transformers_eager(encoder)
        elif name == "previous":
            previous = previous_module().load_huggingface(source, "cut")
            previous._model = encoder.model
            made[name] = project_path(previous, "fp32", BATCH_SAMPLES)
        else:
            precision, _, alone = name.partition("_")
            made[name] = project_path(encoder, precision, 1 if alone else BATCH_SAMPLES)
    return made


def interleaved(encodes: dict[str, Encode], waves: list[torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Seconds per clip of every variant in every round, the variants taking turns."""
    seconds: dict[str, list[float]] = {name: [] for name in encodes}
    for encode in encodes.values():  # warm-up: first calls allocate and pick kernels
        encode(waves[:2])
    for _ in range(rounds):
        for name, encode in encodes.items():
            start = time.perf_counter()
            encode(waves)
            seconds[name].append((time.perf_counter() - start) / len(waves))
    return seconds


def peak_memory(name: str, args: argparse.Namespace) -> float:
    """Peak RSS (MiB) of a fresh process that loads the encoder and encodes the clips as `name` does."""
    command = [sys.executable, "-m", "benchmarks.encoding", "--memory-of", name, "--clips", str(args.clips),
               "--corpus", str(args.corpus), "--encoder", args.encoder]  # fmt: skip
    done = subprocess.run(command, cwd=HERE.parent, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    waves = savee_clips(args.corpus, args.clips, args.encoder)
    encodes = variants(args.encoder, args.variants)
    reference = encodes["transformers_eager"](waves) if "transformers_eager" in encodes else None
    differences = {name: float((encode(waves) - reference).abs().max()) if reference is not None else None
                   for name, encode in encodes.items()}  # fmt: skip
    load_before = os.getloadavg()
    seconds = interleaved(encodes, waves, args.rounds)
    load_after = os.getloadavg()
    base = statistics.median(seconds["transformers_eager"]) if "transformers_eager" in seconds else None
    rows = []
    for name in encodes:
        median = statistics.median(seconds[name])
        rows.append({"variant": name, "s_per_clip": round(median, 4),
                     "rounds_s_per_clip": [round(s, 4) for s in seconds[name]],
                     "speedup_vs_transformers_eager": round(base / median, 2) if base else None,
                     "peak_rss_mb": None if args.no_memory else round(peak_memory(name, args), 1),
                     "max_abs_diff_vs_transformers_eager": differences[name]})  # fmt: skip
    return {
        "protocol": f"SAVEE, {len(waves)} clips drawn with seed 0 (mean {sum(map(len, waves)) / len(waves) / 16000:.2f}"
        f" s, trimmed as features=ssl does), whisper_input=cut, {args.rounds} interleaved rounds, median round",
        "encoder": args.encoder,
        "date": time.strftime("%Y-%m-%d"),
        "command": "HF_HUB_OFFLINE=1 python -m benchmarks.encoding " + " ".join(sys.argv[1:]),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "machine": machine(),
        "results": rows,
    }


def memory_of(args: argparse.Namespace) -> None:
    """The child of `peak_memory`: encode once as `args.memory_of` does, print the peak RSS."""
    waves = savee_clips(args.corpus, args.clips, args.encoder)
    variants(args.encoder, (args.memory_of,))[args.memory_of](waves)
    print(peak_rss_mb())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoding", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=HERE.parents[1] / "shared" / "data" / "savee")
    parser.add_argument("--encoder", default=str(HERE.parents[1] / "shared" / "models" / "whisper-base"))
    parser.add_argument("--clips", type=int, default=120, help="SAVEE clips drawn with seed 0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh processes measuring peak RSS")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=HERE / "encoding.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_of:
        memory_of(args)
        return
    result = run(args)
    for row in result["results"]:
        print(f"{row['variant']:<20} {row['s_per_clip']:.4f} s/clip  x{row['speedup_vs_transformers_eager']}  "
              f"{row['peak_rss_mb']} MiB  diff {row['max_abs_diff_vs_transformers_eager']}")  # fmt: skip
    print("load average", result["loadavg_before"], "->", result["loadavg_after"])
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
