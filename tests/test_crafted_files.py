"""A model file is data read by a schema: every crafted file a reviewer tried is refused in one line, with
nothing run, written, imported or contacted, whether it is a PyTorch checkpoint or a skops file."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

from emotion.config import CONFIG_DIR
from emotion.errors import EmotionError
from emotion.models.estimator import EstimatorHead
from emotion.models.linear import SoftmaxRegression
from emotion.models.module import EmotionClassifier
from emotion.serving.model_file import read_model_file
from emotion.serving.recipes import parse_recipe
from emotion.serving.recognizer import EmotionRecognizer

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
SHAPES = {"mel_mean": (1, 128)}


@pytest.fixture(scope="module")
def recipe() -> dict[str, Any]:
    """A real recipe of a softmax regression on mel_mean, as training writes it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", ["features=mel_mean", "model=linear"])
    features = OmegaConf.to_container(cfg.features, resolve=True)
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    front_end = {"min_duration": 0.25, "max_duration": 300.0}
    return parse_recipe({"net": net, "features": features, "front_end": front_end}, "test").to_dict()


def network_file(folder: Path, recipe: dict[str, Any]) -> Path:
    """A checkpoint as `EmotionRecognizer.save` writes it, with `recipe` in it."""
    net = SoftmaxRegression(SHAPES, len(CLASSES))
    module = EmotionClassifier(lambda **_: net, CLASSES, SHAPES)
    state = {k: v for k, v in module.state_dict().items() if k.startswith(("model.", "standardizer."))}
    path = folder / "crafted.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"classes": CLASSES, "input_shapes": SHAPES,
                                                          "recipe": recipe}}, path)  # fmt: skip
    return path


def estimator_file(folder: Path, recipe: dict[str, Any]) -> Path:
    """A skops file as a fitted scikit-learn head saves it, with `recipe` in it."""
    rows = np.random.default_rng(0).normal(size=(60, 128))
    estimator = LogisticRegression(max_iter=200).fit(rows, np.arange(60) % 6)
    path = folder / "crafted.skops"
    EstimatorHead(estimator, CLASSES, ["mel_mean"]).save(path, recipe)
    return path


WRITERS: dict[str, Callable[[Path, dict[str, Any]], Path]] = {"ckpt": network_file, "skops": estimator_file}


class Listener(BaseHTTPRequestHandler):
    """Counts every request that reaches it (a model that loads must contact no one)."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Listener.requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[str]:
    """A server on loopback that records whatever reaches it; its address."""
    server = HTTPServer(("127.0.0.1", 0), Listener)
    Listener.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def attacks(tmp_path: Path, address: str) -> dict[str, tuple[str, Any]]:
    """Each crafted recipe part (where it goes, what it is), as the reviewer wrote them."""
    marker = tmp_path / "ran"
    shell = f"${{oc.create:{{_target_: setuptools._distutils.spawn.spawn, cmd: [sh, -c, 'touch {marker}']}}}}"
    return {
        "an interpolation that spawns a shell": (
            "net",
            {"_target_": "emotion.models.linear.SoftmaxRegression", "_partial_": True, "activation": shell},
        ),
        "a secret sent by interpolation": (
            "features",
            {"_target_": "emotion.data.features.MelMean", "spectral": {"top_db": "${oc.env:HOME}"}},
        ),
        "torch.load without weights_only": (
            "net",
            {"_target_": "torch.load", "f": str(tmp_path / "x.pt"), "weights_only": False},
        ),
        "os.system through an emotion module": (
            "net",
            {"_target_": "emotion.config.os.system", "_args_": [f"touch {marker}"]},
        ),
        "a logger that calls a host": (
            "net",
            {"_target_": "emotion.tracking.logger.RunLogger", "tracking_uri": f"{address}/x"},
        ),
        "a store that creates folders": (
            "features",
            {"_target_": "emotion.serving.profiles.ProfileStore", "url": f"sqlite:///{tmp_path / 'made' / 'p.db'}"},
        ),
        "an encoder that imports a module": (
            "features",
            {"_target_": "emotion.data.ssl.SSLLayers", "encoder": "crafted_payload.Encoder"},
        ),
        "a fusion that reads branch files": (
            "net",
            {
                "_target_": "emotion.models.fusion.Fusion",
                "_partial_": True,
                "branch_checkpoints": [str(tmp_path / "a.ckpt")] * 2,
            },
        ),
        "a parameter of another type": (
            "net",
            {"_target_": "emotion.models.linear.SoftmaxRegression", "_partial_": True, "hidden": "64"},
        ),
        "an argument the class does not take": (
            "net",
            {"_target_": "emotion.models.linear.SoftmaxRegression", "_partial_": True, "self": 1},
        ),
        "a network of a gigabyte": (
            "net",
            {"_target_": "emotion.models.linear.SoftmaxRegression", "_partial_": True, "hidden": 10**6},
        ),
        "a spectrogram of a gigabyte": (
            "features",
            {"_target_": "emotion.data.features.MelMean", "spectral": {"n_fft": 2**30}},
        ),
        "a megabyte of text": ("features", {"_target_": "emotion.data.features.MelMean", "name": "x" * 10**6}),
    }


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_crafted_recipe_is_refused_in_one_line_with_nothing_run_written_imported_or_contacted(
    kind: str, recipe: dict[str, Any], tmp_path: Path, listener: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crafted_payload.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    refusals = {}
    for name, (part, crafted) in attacks(tmp_path, listener).items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        path = WRITERS[kind](folder, recipe | {part: crafted})
        with pytest.raises(EmotionError) as refused:
            EmotionRecognizer.from_checkpoint(path)
        refusals[name] = str(refused.value)

    for name, message in refusals.items():
        assert "\n" not in message and len(message) < 400, name
        found_nowhere = "is in none of the folders this host keeps encoders in" in message  # a name, never imported
        assert message.startswith(f"crafted.{kind}") or found_nowhere, (name, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [n.replace(" ", "_") for n in attacks(tmp_path, listener)] + ["crafted_payload.py"]
    )  # no marker, no imported module's trace, no store's folder
    assert "crafted_payload" not in sys.modules and Listener.requests == []


def test_the_reviewers_spawn_payload_is_named_as_an_interpolation_that_is_never_resolved(
    recipe: dict[str, Any], tmp_path: Path
) -> None:
    crafted = recipe | {"normalize": {"mode": "${oc.create:{_target_: os.system, command: 'touch x'}}"}}
    with pytest.raises(EmotionError, match=r"crafted\.ckpt's recipe holds an interpolation .* never resolved"):
        read_model_file(network_file(tmp_path, crafted))


def test_a_checkpoint_that_is_a_pickle_of_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    torch.save({"hyper_parameters": {"recipe": Payload()}}, tmp_path / "crafted.ckpt")
    with pytest.raises(EmotionError, match=r"crafted\.ckpt is not a checkpoint emotion can read safely"):
        EmotionRecognizer.from_checkpoint(tmp_path / "crafted.ckpt")
    assert not marker.exists()


def test_a_genuine_model_reads_with_the_same_identity_however_often_it_is_saved(
    recipe: dict[str, Any], tmp_path: Path, tiny_corpus: Path
) -> None:
    for kind, write in WRITERS.items():
        own = recipe if kind == "ckpt" else recipe | {"net": {}}  # a scikit-learn head's recipe has no network
        first = EmotionRecognizer.from_checkpoint(write(tmp_path, own))
        (tmp_path / "again").mkdir(exist_ok=True)
        first.save(tmp_path / "again" / first.file_name)
        second = EmotionRecognizer.from_checkpoint(tmp_path / "again" / first.file_name)

        assert first.version == second.version, kind  # a profile's key: what the model is, not its file's bytes
        wav = next(tiny_corpus.glob("*.wav"))
        once, again = first.classify_files([wav]), second.classify_files([wav])
        torch.testing.assert_close(once.probabilities, again.probabilities)


def test_a_crafted_blend_curve_is_refused_in_one_line_and_a_genuine_one_is_served_by(
    recipe: dict[str, Any], tmp_path: Path
) -> None:
    crafted = {
        "a weight above 1": [[1, 0.0], [8, 1.5]],
        "a negative weight": [[1, -0.1], [8, 1.0]],
        "weights that fall": [[1, 0.5], [8, 0.2]],
        "clips that do not rise": [[8, 0.0], [4, 1.0]],
        "no clip": [[0, 0.0], [8, 1.0]],
        "too many points": [[n, 0.0] for n in range(1, 14)],
        "a weight that is not a number": [[1, "0.5"]],
        "a count that is not a whole number": [[1.5, 0.5]],
        "a weight that is not a number at all": [[1, float("nan")]],
        "a point of three numbers": [[1, 0.5, 2]],
        "not a list": "ramp",
        "no point": [],
    }
    genuine = recipe | {"net": {}}  # a scikit-learn head's recipe has no network
    refusals = {}
    for name, curve in crafted.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        path = estimator_file(folder, genuine | {"normalize": {"mode": "speaker", "blend_curve": curve}})
        with pytest.raises(EmotionError) as refused:
            EmotionRecognizer.from_checkpoint(path)
        refusals[name] = str(refused.value)
    ramp = estimator_file(tmp_path, genuine | {"normalize": {"mode": "speaker", "blend_curve": [[1, 0.0], [5, 0.8]]}})
    served = EmotionRecognizer.from_checkpoint(ramp)

    for name, message in refusals.items():
        assert "\n" not in message and message.startswith("crafted.skops's recipe: normalize.blend_curve"), name
    assert [served.normalizer.weight(n) for n in (1, 3, 5, 40)] == pytest.approx([0.0, 0.4, 0.8, 0.8])
