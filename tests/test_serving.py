"""`emotion-predict` on files and folders, and the model served over HTTP by `mlflow models serve`."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from mlflow.exceptions import MlflowException

from emotion.cli import evaluate, predict
from emotion.serving.requests import AUDIO_DIRS, MAX_ROWS
from tests.conftest import free_port, running_server
from tests.stores import Store


def run_predict(store: Store, *args: str) -> subprocess.CompletedProcess:
    """`emotion-predict` in a process of its own, as a user starts it."""
    return subprocess.run(
        [sys.executable, "-m", "emotion.cli.predict", "--tracking-uri", store.uri, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def predict_here(store: Store, capsys, *args: str) -> tuple[int, str, str]:
    """`emotion-predict` in this process (quicker): exit code, stdout and stderr."""
    try:
        predict.main(["--tracking-uri", store.uri, *args])
        code = 0
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_emotion_predict_on_a_folder_prints_a_table_and_writes_csv_and_json(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    uri, _ = champion
    wavs = sorted(tiny_corpus.glob("*.wav"))
    table = run_predict(store, "--model", uri, str(tiny_corpus))
    assert table.returncode == 0, table.stderr[-3000:]
    header, *rows = table.stdout.strip().splitlines()
    assert header.split()[:3] == ["file", "emotion", "confidence"]
    assert len(rows) == len(wavs)
    assert "100%" in table.stderr  # the progress bar over the folder

    code, _, err = predict_here(
        store, capsys, "--model", uri, str(tiny_corpus), "--format", "csv", "-o", str(tmp_path / "p.csv")
    )
    assert code == 0, err[-3000:]
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["file"].tolist() == [str(p) for p in wavs]
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, atol=1e-3)
    assert set(frame["emotion"]) <= set(store.configs[champion[1]].data.classes)

    _, out, _ = predict_here(store, capsys, "--model", uri, str(wavs[0]), "--format", "json")
    (record,) = json.loads(out)
    assert record["file"] == str(wavs[0]) and record["emotion"] == frame["emotion"][0]


@pytest.mark.parametrize(
    ("model", "audio", "message"),
    [
        ("models:/nobody@champion", "good", "no registered model 'nobody'"),
        ("models:/served@gold", "good", "has no alias 'gold'"),
        ("models:/served@champion", "bad", "cannot decode audio file"),
        ("models:/served@champion", "missing", "no such file or folder"),
    ],
)
def test_emotion_predict_explains_what_is_missing(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys, model: str, audio: str, message: str
) -> None:
    (tmp_path / "bad.wav").write_text("not audio")
    path = {"good": next(tiny_corpus.glob("*.wav")), "bad": tmp_path / "bad.wav", "missing": tmp_path / "x.wav"}[audio]
    code, _, err = predict_here(store, capsys, "--model", model, str(path))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err


@pytest.mark.parametrize(
    ("model", "message"),
    [("models:/nosuch@champion", "no registered model 'nosuch'"), ("models:/served@gold", "has no alias 'gold'")],
)
def test_emotion_evaluate_explains_a_missing_model_in_one_line(store: Store, champion, capsys, model, message) -> None:
    with pytest.raises(SystemExit) as exited:
        evaluate.main([model, "--tracking-uri", store.uri])
    err = capsys.readouterr().err
    assert exited.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err


def test_emotion_evaluate_words_a_missing_corpus_folder_as_emotion_train_does(store: Store, champion, capsys) -> None:
    with pytest.raises(SystemExit):
        evaluate.main([champion[0], "data=crema_d", "data.root=/no/such/folder", "--tracking-uri", store.uri])
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: data.root=/no/such/folder: no such folder"


def test_emotion_predict_skips_bad_files_names_each_and_exits_non_zero(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(tiny_corpus.glob("*.wav"))[:4]
    for wav in good:
        (folder / wav.name).write_bytes(wav.read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF....not audio")
    samples, rate = sf.read(good[0], dtype="float32")
    sf.write(folder / "blip.wav", samples[: int(0.09 * rate)], rate)

    code, out, err = predict_here(store, capsys, "--model", champion[0], str(folder), "--format", "csv")
    assert code == 1
    assert sorted(Path(f).name for f in pd.read_csv(io.StringIO(out))["file"]) == sorted(w.name for w in good)
    assert "warning: skipped" in err and "corrupt.wav" in err
    assert "blip.wav is 0.090 s long, shorter than the data.min_duration=0.25 s" in err
    assert "error: skipped 2 of 6 files" in err

    written = tmp_path / "kept.csv"
    stop = ["--on-bad-file", "error", "--format", "csv", "-o", str(written)]
    code, out, err = predict_here(store, capsys, "--model", champion[0], str(folder), *stop)
    assert (code, out) == (1, "")
    assert err.strip().splitlines()[-1].startswith("error: ") and "blip.wav" in err
    kept = pd.read_csv(written)["file"].map(lambda f: Path(f).name).tolist()
    assert kept == sorted(w.name for w in good)  # predicted before the bad file stopped it, and not lost


def test_emotion_predict_checks_its_output_folder_before_predicting_anything(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path, capsys
) -> None:
    target = tmp_path / "missing" / "dir" / "out.json"
    code, out, err = predict_here(store, capsys, "--model", champion[0], str(tiny_corpus), "-o", str(target))
    assert (code, out) == (1, "")
    assert err.strip() == f"error: cannot write --output {target}: no folder {target.parent}"
    assert "predicting" not in err  # refused before the model was loaded or any file read


def test_the_served_model_refuses_a_waveform_shorter_than_training_allowed(store: Store, champion) -> None:
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(champion[0])
    with pytest.raises(
        MlflowException, match=r"the waveform is 0.000 s long, shorter than the data.min_duration=0.25 s"
    ):
        model.predict(pd.DataFrame({"waveform": [[0.0, 0.01, 0.02]], "sample_rate": [16000]}))


def post(url: str, payload: dict) -> tuple[int, dict]:
    """POST `payload` as JSON: the HTTP status and the JSON answer, refusals (4xx) included."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def post_raw(url: str, body: bytes) -> tuple[int, bytes]:
    """POST `body` as it is, labelled JSON: the HTTP status and the raw answer."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def base64_of(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_the_served_model_takes_audio_bytes_reads_only_allowed_folders_and_refuses_bad_requests_in_one_line(
    store: Store, champion, tiny_corpus: Path, tmp_path: Path
) -> None:
    uri, _ = champion
    wav, outside = sorted(tiny_corpus.glob("*.wav"))[:2]  # `outside`: a real file, in no allowed folder
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(wav, allowed / "inside.wav")
    (allowed / "link.wav").symlink_to(outside)  # a way out of the folder, refused like the rest
    port = free_port()
    serve = ["mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, AUDIO_DIRS: str(allowed), MAX_ROWS: "4"}
    samples, rate = sf.read(wav, dtype="float32")
    one_second = [0.01 * float(np.sin(i / 5)) for i in range(16000)]
    good = {"audio": base64_of(wav)}
    bad = {
        "outside": [{"path": str(outside)}],
        "missing": [{"path": str(allowed / "missing.wav")}],
        "link": [{"path": str(allowed / "link.wav")}],
        "too long": [{"waveform": [0.0] * 360_000, "sample_rate": 100}],
        "too short": [{"waveform": one_second[:800], "sample_rate": 16000}],
        "corrupt base64": [{"audio": "UklGRi4uLi4gbm90IGF1ZGlv!!"}],
        "empty audio": [{"audio": base64.b64encode(b"").decode()}],
        "not audio": [{"audio": base64.b64encode(b"plain text, not a sound file " * 40).decode()}],
        "too many rows": [good] * 5,
        "wrong column": [{"wav": good["audio"]}],
        "empty records": [],
        "NaN": [{"waveform": [*one_second[:-1], float("nan")], "sample_rate": 16000}],
        "Inf": [{"waveform": [*one_second[:-1], float("inf")], "sample_rate": 16000}],
        "wrong type": [{"waveform": "0.1, 0.2", "sample_rate": 16000}],
        "rate of the wrong type": [{"waveform": one_second, "sample_rate": "fast"}],
        "rate out of bounds": [{"waveform": one_second, "sample_rate": 44100.5}],
    }
    with running_server([sys.executable, "-m", *serve], port, "/ping", tmp_path / "serve.log", env=env) as url:
        answers = {
            name: post(f"{url}/invocations", {"dataframe_records": records})
            for name, records in {
                "bytes": [good],
                "waveform": [{"waveform": samples.tolist(), "sample_rate": rate}],
                "inside": [{"path": str(allowed / "inside.wav")}],
                "silence": [{"waveform": [0.0] * 32000, "sample_rate": 16000}],
            }.items()
        }
        for name, records in bad.items():
            answers[name] = post(f"{url}/invocations", {"dataframe_records": records})
            answers[f"good after {name}"] = post(f"{url}/invocations", {"dataframe_records": [good]})
        malformed = b'{"dataframe_records": [{"audio": "' + b"A" * 3_000_000  # a 3 MB body cut short
        not_json = post_raw(f"{url}/invocations", malformed)
        not_utf8 = post_raw(f"{url}/invocations", b'{"dataframe_records": "\xff\xfe"}')
        after = post(f"{url}/invocations", {"dataframe_records": [good]})
    for status, body in (not_json, not_utf8):
        assert status == 400 and len(body) < 1000, body[:300]  # one line, no echo of the body
        assert set(json.loads(body)) <= {"error_code", "message", "sqlstate", "error_class"}
    assert json.loads(not_json[1])["message"].startswith("the request body is not valid JSON (line 1, column ")
    assert json.loads(not_utf8[1])["message"].startswith("the request body is not UTF-8 text; send ")
    assert after[0] == 200
    served = {name: answer["predictions"][0] for name, (status, answer) in answers.items() if status == 200}
    refused = {name: answer for name, (status, answer) in answers.items() if status == 400}
    assert set(refused) == set(bad)
    assert set(served) == {"bytes", "waveform", "inside", "silence"} | {f"good after {name}" for name in bad}
    for name in ("waveform", "inside", *(f"good after {name}" for name in bad)):
        assert served[name]["emotion"] == served["bytes"]["emotion"]
        assert served[name]["confidence"] == pytest.approx(served["bytes"]["confidence"], abs=1e-5)
    assert served["bytes"]["silent"] is False
    assert (served["silence"]["emotion"], served["silence"]["confidence"], served["silence"]["silent"]) == (
        "silence",
        0.0,
        True,
    )
    messages = {name: answer["message"] for name, answer in refused.items()}
    for name, answer in refused.items():
        assert set(answer) <= {"error_code", "message", "sqlstate", "error_class"}, name  # no stack trace
        message = answer["message"]
        assert "\n" not in message and " at 0x" not in message and "Failed to predict" not in message, name
        assert "site-packages" not in message and "mlartifacts" not in message and "Traceback" not in message, name
    unnamed = {name: messages[name].replace(path, "PATH") for name, path in (
        ("outside", str(outside)), ("missing", str(allowed / "missing.wav")), ("link", str(allowed / "link.wav"))
    )}  # fmt: skip
    assert (
        unnamed["outside"]
        == unnamed["missing"]
        == unnamed["link"]
        == ("no audio file 'PATH' in the folders this model may read")
    )
    assert messages["too long"] == "the waveform is 3600.0 s long, longer than data.max_duration=300 s"
    assert messages["rate out of bounds"] == (
        "the waveform has a sample rate of 44100.5 Hz: give a whole number of Hz from 4000 to 384000"
    )
    assert messages["too short"].startswith("the waveform is 0.050 s long, shorter than the data.min_duration=0.25 s")
    assert messages["corrupt base64"] == "`audio` is not valid base64 (send the file's bytes, base64-encoded)"
    assert messages["not audio"].startswith("cannot decode the audio file sent in `audio`:")
    assert messages["empty audio"] == "`audio` is empty: the file sent holds no bytes"
    assert messages["too many rows"] == "5 rows in one request, more than the 4 this model takes (EMOTION_MAX_ROWS)"
    columns = "['audio', 'path', 'waveform', 'sample_rate', 'speaker', 'update_profile']"
    assert messages["wrong column"] == f"unknown column(s) ['wav']: each row takes {columns}"
    assert messages["empty records"] == "the request holds no rows: send one row per clip"
    assert (
        messages["NaN"] == messages["Inf"] == "the waveform holds samples that are not finite numbers (NaN or infinity)"
    )
    assert messages["wrong type"] == "a waveform must be an array of numbers (mono samples)"
    assert messages["rate of the wrong type"] == "`sample_rate` must be a number of samples a second"
