"""What `features=ssl` costs: seconds per clip for an encoder, and cache bytes per clip.

The encoder is a torchaudio bundle (a randomly initialised model of the bundle's own architecture and
size costs what the trained one costs, so no weights are needed) or a Hugging Face model (hub id or
folder, its real weights; Whisper with either input policy). Clips of a real corpus go through the
real path (FeatureCache: decoding, silence trimming, the encoder, the cache's shards), timed from an
empty cache. The peer is what a user would write, one clip at a time, mean-pooled, on the same
clips: torchaudio's `extract_features`, or transformers' `output_hidden_states=True` (for Whisper:
its feature extractor and encoder on 30 s, the only input its encoder takes). The cache's size per
clip is set against what storing every layer's frames (unpooled, float32) would take.

python -m benchmarks.ssl_cost --corpus ../shared/data/emodb/wav --reader emodb --clips 48
python -m benchmarks.ssl_cost --corpus ../shared/data/emodb/wav --encoder ../shared/models/whisper-base \
    --whisper-input cut
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Record, machine, timed
from emotion.data.cache import FeatureCache
from emotion.data.corpora import READERS, read_corpus
from emotion.data.features import Spectral
from emotion.data.frontend import AudioFrontEnd
from emotion.data.ssl import SSLLayers
from emotion.data.windows import Window
from emotion.encoders.huggingface import WhisperEncoderLayers
from emotion.encoders.torchaudio_bundle import bundle_of, is_bundle

HERE = Path(__file__).resolve().parent


def random_upstream(upstream: str, folder: Path) -> Path:
    """A checkpoint of the bundle's architecture at its own size, randomly initialised."""
    from torchaudio.pipelines._wav2vec2.utils import _get_model  # the bundle's own architecture builder

    bundle = bundle_of(upstream)
    torch.manual_seed(0)
    model = _get_model(bundle._model_type, bundle._params)
    path = folder / f"random-{upstream}.pt"
    torch.save({"params": dict(bundle._params), "state_dict": model.state_dict()}, path)
    return path


@torch.no_grad()
def peer_per_clip(features: SSLLayers, waves: list[torch.Tensor]) -> None:
    """The peer: the encoder's own forward once per clip, each layer mean-pooled over time."""
    encoder = features.encoder
    model, device = encoder.model, encoder.device
    for wave in waves:
        if is_bundle(encoder.source):
            layers, _ = model.extract_features(wave.to(device)[None])
        elif isinstance(encoder, WhisperEncoderLayers):
            log_mel = encoder.extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt").input_features
            layers = model(log_mel.to(device), output_hidden_states=True).hidden_states
        else:
            layers = model(wave.to(device)[None], output_hidden_states=True).hidden_states
        torch.stack([layer[0].mean(dim=0) for layer in layers]).cpu()


def ssl_features(encoder: str, whisper_input: str, work: Path) -> SSLLayers:
    """`features=ssl` of a bundle (random weights of its size) or of a Hugging Face model (its weights)."""
    if is_bundle(encoder):
        return SSLLayers(Spectral(), encoder, str(random_upstream(encoder, work)), window=Window())
    return SSLLayers(Spectral(), encoder=encoder, whisper_input=whisper_input, window=Window())


def run(corpus: Path, reader: str, n_clips: int, encoder: str, whisper_input: str, about: dict) -> list[Record]:
    """Cold extraction through the cache against the encoder's own forward per clip; the cache's bytes per clip."""
    clips = read_corpus(corpus, reader).clips[:n_clips]
    with tempfile.TemporaryDirectory(prefix="bench-ssl-") as work:
        features = ssl_features(encoder, whisper_input, Path(work))
        features.of_clips([torch.zeros(features.sample_rate)])  # loading the encoder: not counted
        front_end = AudioFrontEnd(features)
        cache = FeatureCache(Path(work) / "cache", corpus, front_end)
        ours, table = timed(lambda: cache.table(clips))
        cache_bytes = sum(f.stat().st_size for f in cache.folder.glob("shard-*.pt"))
        waves = [front_end.clip(c, "skip") for c in clips]
        peer, _ = timed(lambda: peer_per_clip(features, waves))
    seconds = [len(w) / features.sample_rate for w in waves]
    layers, dim = features.shapes()["ssl"]
    unpooled = statistics.mean(round(s * 50) for s in seconds) * layers * dim * 4  # 50 frames a second
    policy = f" ({whisper_input})" if isinstance(features.encoder, WhisperEncoderLayers) else ""
    parameters = {
        "encoder": encoder + policy,
        "weights": "random (same architecture and size as the bundle)" if is_bundle(encoder) else "pretrained",
        "clips": len(table.clips),
        "mean_clip_seconds": round(statistics.mean(seconds), 3),
        "device": str(features.encoder.device),
        "batch_seconds": features.batch_samples / features.sample_rate,
        "encoder_parameters": sum(p.numel() for p in features.encoder.model.parameters()),
    }
    notes = f"corpus {corpus}"
    return [
        Record(
            f"ssl: {Path(encoder).name}{policy} extraction, from an empty cache",
            ours / len(clips),
            peer / len(clips),
            "s/clip",
            parameters=parameters,
            machine=about,
            notes=notes,
        ),
        Record(
            f"ssl: {Path(encoder).name} cache size (pooled layers) vs every layer's frames",
            cache_bytes / len(table.clips),
            unpooled,
            "bytes",
            parameters=parameters,
            machine=about,
            notes=notes,
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssl_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus folder, e.g. ../shared/data/emodb/wav")
    parser.add_argument("--reader", choices=sorted(READERS), default="emodb")
    parser.add_argument("--clips", type=int, default=48, help="the corpus's first N clips")
    parser.add_argument("--encoder", default="WAVLM_BASE_PLUS", help="a torchaudio bundle, a hub id or a folder")
    parser.add_argument("--whisper-input", choices=("cut", "pad30"), default="pad30", help="Whisper's input policy")
    parser.add_argument("--output", type=Path, default=HERE / "ssl_cost.json", help="records are added to it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records = run(args.corpus, args.reader, args.clips, args.encoder, args.whisper_input, machine())
    for r in records:
        print(f"{r.name:<58} ours {r.ours:>10.4g}  peer {r.peer:>10.4g} {r.unit:<7} ratio {r.ratio:.3g}")
    earlier = json.loads(args.output.read_text()) if args.output.is_file() else []
    args.output.write_text(json.dumps(earlier + [r.as_dict() for r in records], indent=2) + "\n")
    print(f"added {len(records)} records to {args.output}")


if __name__ == "__main__":
    main()
