"""Linear probes of a frozen encoder's layers: how much emotion each layer holds, speaker-independently.

Each layer's clip means (`features=ssl`, read through the project's feature cache, so the encoder runs
only for clips not cached yet) are standardised on the training speakers and classified by scikit-learn's
logistic regression, leave-one-speaker-out over every speaker; the score is the UAR of all folds'
predictions pooled. The last row is the mean of all layers. This is the reference the learned head
(`model=ssl_head`) is set against: it trains on every other speaker, with no validation speaker held out.
The same probe of the mean of the layers is also trained on the head's own training speakers (those the
split leaves after holding some out for validation), to tell the cost of that hold-out from the head's.

python -m benchmarks.layer_probes --corpus ../shared/data/emodb/wav --reader emodb \
    --encoder ../shared/models/whisper-base
python -m benchmarks.layer_probes --corpus ../shared/data/savee --reader savee \
    --encoder ../shared/models/whisper-base --whisper-input pad30
python -m benchmarks.layer_probes --docs docs/encoders.md   # the table of every result, into the page
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import machine
from benchmarks.results_tables import machine_name, write_into
from emotion.data.cache import FeatureCache
from emotion.data.corpora import EMOTIONS, read_corpus
from emotion.data.features import Spectral
from emotion.data.frontend import AudioFrontEnd
from emotion.data.splits import LeaveOneSpeakerOut
from emotion.data.ssl import SSLLayers
from emotion.metrics import unweighted_average_recall

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "layer_probes.json"


def loso_uar(features: np.ndarray, labels: np.ndarray, speakers: np.ndarray) -> float:
    """Pooled UAR of leave-one-speaker-out logistic regression on standardised features."""
    predicted = np.empty_like(labels)
    for speaker in np.unique(speakers):
        test = speakers == speaker
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(features[~test], labels[~test])
        predicted[test] = probe.predict(features[test])
    return unweighted_average_recall(labels, predicted)


def head_speakers_uar(features: np.ndarray, labels: np.ndarray, clips: list, seed: int = 42) -> float:
    """Pooled UAR of the same probe trained on the speakers the learned head trains on in each LOSO fold:
    every other speaker but those the split holds out for validation (`split=loso`, seeded as training is)."""
    predicted = np.empty_like(labels)
    for fold in range(len({c.speaker for c in clips})):
        split = LeaveOneSpeakerOut(seed=seed).split(clips, fold)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(features[split.train], labels[split.train])
        predicted[split.test] = probe.predict(features[split.test])
    return unweighted_average_recall(labels, predicted)


def probe_layers(corpus: Path, reader: str, encoder: str, whisper_input: str, cache_dir: Path) -> dict:
    """Every layer's probe UAR, and that of the mean of all layers (also trained on the head's speakers only)."""
    features = SSLLayers(Spectral(), encoder=encoder, whisper_input=whisper_input)
    clips = read_corpus(corpus, reader, classes=EMOTIONS).clips
    table = FeatureCache(cache_dir, corpus, AudioFrontEnd(features)).table(clips)
    layers = table.tensors["ssl"].numpy()  # (clips, layers, width)
    labels = np.array([EMOTIONS.index(c.emotion) for c in table.clips])
    speakers = np.array([c.speaker for c in table.clips])
    per_layer = [loso_uar(layers[:, i], labels, speakers) for i in range(layers.shape[1])]
    return {
        "corpus": reader,
        "encoder": encoder,
        "whisper_input": whisper_input,
        "clips": len(labels),
        "speakers": len(set(speakers)),
        "layer_uar": [round(u, 4) for u in per_layer],
        "mean_of_layers_uar": round(loso_uar(layers.mean(axis=1), labels, speakers), 4),
        "mean_of_layers_on_head_speakers_uar": round(head_speakers_uar(layers.mean(axis=1), labels, table.clips), 4),
        "machine": machine(),
    }


def markdown(result: dict) -> str:
    rows = [f"| {i} | {u:.3f} |" for i, u in enumerate(result["layer_uar"])]
    header = f"{result['corpus']}, {result['encoder']} ({result['whisper_input']}), {result['clips']} clips"
    mean = f"| mean of layers | {result['mean_of_layers_uar']:.3f} |"
    return "\n".join([f"| layer ({header}) | pooled LOSO UAR |", "|---|---|", *rows, mean])


def probes_table(results: list[dict]) -> str:
    """Markdown: one row per layer, one column per corpus and input policy, and the mean of the layers."""
    results = sorted(results, key=lambda r: (r["corpus"], r["whisper_input"]))
    header = "| layer | " + " | ".join(f"{r['corpus']}, {r['whisper_input']}" for r in results) + " |"
    lines = [header, "|---" * (len(results) + 1) + "|"]
    for layer in range(max(len(r["layer_uar"]) for r in results)):
        cells = [f"{r['layer_uar'][layer]:.3f}" if layer < len(r["layer_uar"]) else "" for r in results]
        best = [max(r["layer_uar"]) == r["layer_uar"][layer] if layer < len(r["layer_uar"]) else False for r in results]
        cells = [f"**{c}**" if b else c for c, b in zip(cells, best, strict=True)]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| mean of layers | " + " | ".join(f"{r['mean_of_layers_uar']:.3f}" for r in results) + " |")
    head = [f"{r['mean_of_layers_on_head_speakers_uar']:.3f}" if "mean_of_layers_on_head_speakers_uar" in r else ""
            for r in results]  # fmt: skip
    lines.append("| mean of layers, on the head's training speakers only | " + " | ".join(head) + " |")
    where = {machine_name(r) for r in results}
    return "\n".join(lines) + f"\n\nMachine: {', '.join(sorted(where))}. Best layer of each column in bold."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--reader")
    parser.add_argument("--encoder", help="a torchaudio bundle, a hub id or a folder")
    parser.add_argument("--whisper-input", default="pad30", choices=("cut", "pad30"))
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/emotion").expanduser())
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file results are added to")
    parser.add_argument("--docs", type=Path, help="only write the table of the results file into this page")
    args = parser.parse_args()
    if args.docs:
        write_into(args.docs, "layer-probes", probes_table(json.loads(args.results.read_text())))
        return
    result = probe_layers(args.corpus, args.reader, args.encoder, args.whisper_input, args.cache_dir)
    print(markdown(result))
    results = json.loads(args.results.read_text()) if args.results.exists() else []
    key = (result["corpus"], result["whisper_input"])
    results = [r for r in results if (r["corpus"], r["whisper_input"]) != key] + [result]
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
