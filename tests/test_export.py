"""`emotion-export`: a speaker-adaptive Whisper + scikit-learn model as ONNX files, classified by
docs/examples/classify_onnx.py with ONNX Runtime, numpy and soundfile alone, as the package classifies.

The model is the recipe's kind (`experiment=whisper_base_adaptive features.whisper_input=cut`), fitted here on
real Emo-DB clips' features from the real Whisper-base checkpoint: a logistic regression on all layers as the
adaptive head, a calibrated RBF SVM on their mean as its twin (the two head kinds the recipe's search picks).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from emotion.cli import export
from emotion.data.features import Spectral
from emotion.data.normalize import SpeakerNormalizer
from emotion.data.ssl import SSLLayers
from emotion.models.estimator import EstimatorHead, LayerView
from emotion.models.linear import SoftmaxRegression
from emotion.models.module import EmotionClassifier
from emotion.serving.onnx_head import estimator_graph
from emotion.serving.recognizer import BLENDED, NO_SPEAKER, EmotionRecognizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WHISPER = SHARED / "models" / "whisper-base"
EMODB = SHARED / "data" / "emodb" / "wav"
EXAMPLE = ROOT / "docs" / "examples" / "classify_onnx.py"
CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
#: Emo-DB speaker 03's first three clips of anger (W), neutral (N) and sadness (T): classes the heads saw, and three
#: they never did (their probability is 0).
CODES = {"W": 0, "N": 4, "T": 5}
#: Fewer clips than the test's 9 weigh less than fully: the speaker's answer blends the head with its twin.
MIN_CLIPS = 16
#: Only these may be imported by the example: a module named here fails to import in its process.
BLOCKED = ("torch", "torchaudio", "emotion", "transformers", "sklearn", "skl2onnx", "onnx", "scipy")
needs_whisper = pytest.mark.skipif(not (WHISPER / "model.safetensors").is_file(), reason=f"no checkpoint at {WHISPER}")


def speaker_clips() -> list[Path]:
    clips = sorted(EMODB.glob("03*.wav"))
    return [path for code in CODES for path in [p for p in clips if p.stem[5] == code][:3]]


def recipe() -> dict:
    """The recipe `experiment=whisper_base_adaptive features.whisper_input=cut` writes, with `MIN_CLIPS`, encoding
    in bf16 (what `features.precision=auto` is on a CPU with bfloat16): its export is the fp32 network all the same."""
    features = {"_target_": "emotion.data.ssl.SSLLayers", "encoder": "whisper-base", "whisper_input": "cut",
                "pooling": "mean", "precision": "bf16",
                "spectral": {"_target_": "emotion.data.features.Spectral"}}  # fmt: skip
    normalize = {"mode": "speaker", "scale": "mean_var", "min_clips": MIN_CLIPS, "shrinkage": 2.0}
    return {"net": {}, "features": features, "front_end": {"min_duration": 0.25, "max_duration": 300.0},
            "normalize": normalize}  # fmt: skip


@dataclass
class Exported:
    """The recipe's model as the package reads its file, its features of the clips, and its exported folder."""

    recognizer: EmotionRecognizer
    features: dict[str, torch.Tensor]
    folder: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The recipe's model fitted on speaker 03's clips, its file read back, and the folder emotion-export wrote."""
    folder = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMOTION_ENCODER_DIRS", str(WHISPER.parent))  # where the recipe's `whisper-base` is found
        return fitted_and_exported(folder)


def fitted_and_exported(folder: Path) -> Exported:
    """The heads fitted on the clips' features, saved as training saves them, exported by the command."""
    clips = speaker_clips()
    features = SSLLayers(Spectral(), encoder=str(WHISPER), whisper_input="cut")
    raw = features.of_clips([torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in clips])
    labels = np.array([CODES[path.stem[5]] for path in clips])
    normalizer = SpeakerNormalizer({"ssl": (7, 512)}, mode="speaker", min_clips=MIN_CLIPS)
    normalizer.fit(raw)
    adaptive_rows = normalizer(raw, ["03"] * len(clips), min_clips=1)[0]["ssl"].flatten(1).numpy()
    head = Pipeline([("layers", LayerView("all", 7)), ("scale", StandardScaler()),
                     ("estimator", LogisticRegression(C=0.1, max_iter=500))]).fit(adaptive_rows, labels)  # fmt: skip
    svm = Pipeline([("layers", LayerView("mean", 7)), ("scale", StandardScaler()), ("estimator", SVC(C=10.0))])
    twin = CalibratedClassifierCV(svm, cv=2, ensemble=False).fit(raw["ssl"].flatten(1).numpy(), labels)
    EstimatorHead(head, CLASSES, ["ssl"], normalizer, twin).save(folder / "model.skops", recipe())
    export.main([str(folder / "model.skops"), str(folder / "onnx")])
    recognizer = EmotionRecognizer.from_checkpoint(folder / "model.skops")
    recognizer.features.encoder.precision = "fp32"  # the package's answers in fp32, as exported
    package = recognizer.front_end.inputs([recognizer.decode(path) for path in clips])
    return Exported(recognizer, package, folder / "onnx")


def classified_by_example(folder: Path, clips: list[Path], *flags: str) -> list[dict]:
    """The example's answers, run where none of `BLOCKED` imports."""
    prelude = (f"import sys, runpy; sys.modules.update(dict.fromkeys({list(BLOCKED)!r}));"
               f"sys.argv = {[str(EXAMPLE), str(folder), *map(str, clips), *flags]!r};"
               f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", prelude], capture_output=True, text=True, cwd=folder, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def probabilities_of(answers: list[dict]) -> np.ndarray:
    return np.array([[answer["probabilities"][name] for name in CLASSES] for answer in answers])


@needs_whisper
def test_the_exported_model_classifies_every_clip_as_the_package_does_without_torch_or_emotion(
    exported: Exported,
) -> None:
    clips = speaker_clips()
    for flags, speakers in (((), None), (("--speaker",), ["03"] * len(clips))):
        expected, ways = exported.recognizer.classify_inputs(exported.features, speakers)
        answers = classified_by_example(exported.folder, clips, *flags)
        assert [a["file"] for a in answers] == [str(path) for path in clips]
        assert [a["emotion"] for a in answers] == [CLASSES[i] for i in expected.argmax(dim=1)]
        np.testing.assert_allclose(probabilities_of(answers), expected.numpy(), atol=1e-3)
        assert set(ways) == ({BLENDED} if speakers else {NO_SPEAKER})


@needs_whisper
def test_the_examples_log_mel_and_encoder_graph_give_the_packages_features(exported: Exported) -> None:
    model = runpy.run_path(str(EXAMPLE))["ExportedModel"](exported.folder)
    ours = np.stack([model.features(model.read(path)) for path in speaker_clips()[:2]])
    package = exported.features["ssl"][:2].numpy()
    np.testing.assert_allclose(ours, package, atol=1e-3 * np.abs(package).max())


def test_each_layer_view_of_a_head_converts_to_the_same_probabilities() -> None:
    rows = np.random.default_rng(0).normal(size=(40, 3 * 8)).astype(np.float32)
    labels = np.arange(40) % 3
    for layers in ("all", "mean", 1):
        pipeline = Pipeline([("layers", LayerView(layers, 3)), ("estimator", LogisticRegression(max_iter=500))])
        graph = estimator_graph(pipeline.fit(rows, labels), 24, 4, "head_")
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                             onnx.helper.make_opsetid("ai.onnx.ml", 3)])  # fmt: skip
        model.graph.output.append(onnx.helper.make_tensor_value_info("head_answer", onnx.TensorProto.FLOAT, None))
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        answered = session.run(None, {"head_rows": rows})[0]
        np.testing.assert_allclose(answered[:, :3], pipeline.predict_proba(rows), atol=1e-5)
        assert not answered[:, 3].any()  # a class the head never saw


def test_a_network_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", ["features=mel_mean", "model=linear"])
    saved = {"net": OmegaConf.to_container(cfg.model.net, resolve=True),
             "features": OmegaConf.to_container(cfg.features, resolve=True),
             "front_end": {"min_duration": 0.25, "max_duration": 300.0}}  # fmt: skip
    shapes = {"mel_mean": (1, 128)}
    module = EmotionClassifier(lambda **_: SoftmaxRegression(shapes, 6), CLASSES, shapes)
    state = {k: v for k, v in module.state_dict().items() if k.startswith(("model.", "standardizer."))}
    hyper = {"classes": CLASSES, "input_shapes": shapes, "recipe": saved}
    torch.save({"state_dict": state, "hyper_parameters": hyper}, tmp_path / "net.ckpt")
    with pytest.raises(SystemExit):
        export.main([str(tmp_path / "net.ckpt"), str(tmp_path / "onnx")])
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: only a model of Whisper features and a scikit-learn head (model=logreg|svm|heads) exports"
    ]
    assert not (tmp_path / "onnx").exists()
