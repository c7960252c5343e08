"""What `features=ssl` costs: seconds per clip for a base-size upstream, and cache bytes per clip.

A randomly initialised model of the bundle's own architecture and size (WAVLM_BASE_PLUS by default)
costs what the trained one costs, so no weights are needed. Clips of a real corpus go through the
real path (FeatureCache: decoding, silence trimming, the upstream, the cache's shards), timed from an
empty cache. The peer is what a user would write: torchaudio's `extract_features` one clip at a time,
mean-pooled, on the same trimmed clips. The cache's size per clip is set against what storing every
layer's frames (unpooled, float32) would take.

python -m benchmarks.ssl_cost --corpus ../shared/data/emodb/wav --reader emodb --clips 48
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Record, machine, timed
from emotion.data.audio import MAX_DURATION
from emotion.data.cache import FeatureCache, decode_clip
from emotion.data.corpora import PARSERS, read_corpus
from emotion.data.features import Spectral
from emotion.data.ssl import SSLLayers, bundle_of
from emotion.data.windows import Window

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
def torchaudio_per_clip(model: torch.nn.Module, waves: list[torch.Tensor], device: torch.device) -> None:
    """The peer: one `extract_features` call per clip, each layer mean-pooled over time."""
    for wave in waves:
        layers, _ = model.extract_features(wave.to(device)[None])
        torch.stack([layer[0].mean(dim=0) for layer in layers]).cpu()


def run(corpus: Path, reader: str, n_clips: int, upstream: str, about: dict) -> list[Record]:
    """Cold extraction through the cache against torchaudio per clip; the cache's bytes per clip."""
    clips = read_corpus(corpus, reader).clips[:n_clips]
    with tempfile.TemporaryDirectory(prefix="bench-ssl-") as work:
        features = SSLLayers(Spectral(), upstream, str(random_upstream(upstream, Path(work))), window=Window())
        features.of_clips([torch.zeros(features.sample_rate)])  # loading the upstream: not counted
        cache = FeatureCache(Path(work) / "cache", corpus, features)
        ours, table = timed(lambda: cache.table(clips))
        cache_bytes = sum(f.stat().st_size for f in cache.folder.glob("shard-*.pt"))
        waves = [decode_clip(c, features, (0.0, MAX_DURATION), "skip") for c in clips]
        peer, _ = timed(lambda: torchaudio_per_clip(features.model, waves, features.device))
    seconds = [len(w) / features.sample_rate for w in waves]
    layers, dim = features.shapes()["ssl"]
    unpooled = statistics.mean(round(s * 50) for s in seconds) * layers * dim * 4  # 50 frames a second
    parameters = {
        "upstream": upstream,
        "weights": "random (same architecture and size as the bundle)",
        "clips": len(table.clips),
        "mean_clip_seconds": round(statistics.mean(seconds), 3),
        "device": str(features.device),
        "batch_seconds": features.batch_samples / features.sample_rate,
        "upstream_parameters": sum(p.numel() for p in features.model.parameters()),
    }
    notes = f"corpus {corpus}"
    return [
        Record(
            f"ssl: {upstream} extraction, from an empty cache",
            ours / len(clips),
            peer / len(clips),
            "s/clip",
            parameters=parameters,
            machine=about,
            notes=notes,
        ),
        Record(
            "ssl: cache size (pooled layers) vs every layer's frames",
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
    parser.add_argument("--reader", choices=sorted(PARSERS), default="emodb")
    parser.add_argument("--clips", type=int, default=48, help="the corpus's first N clips")
    parser.add_argument("--upstream", default="WAVLM_BASE_PLUS", help="a torchaudio.pipelines bundle name")
    parser.add_argument("--output", type=Path, default=HERE / "ssl_cost.json", help="records are added to it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records = run(args.corpus, args.reader, args.clips, args.upstream, machine())
    for r in records:
        print(f"{r.name:<58} ours {r.ours:>10.4g}  peer {r.peer:>10.4g} {r.unit:<7} ratio {r.ratio:.3g}")
    earlier = json.loads(args.output.read_text()) if args.output.is_file() else []
    args.output.write_text(json.dumps(earlier + [r.as_dict() for r in records], indent=2) + "\n")
    print(f"added {len(records)} records to {args.output}")


if __name__ == "__main__":
    main()
