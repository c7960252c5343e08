"""The served model answers a recording (`params={"timeline": true}`): one row per segment of speech, as
`emotion-predict --timeline` gives, within the host's bounds, every refusal one line naming the field.

The model is the registry's tiny champion (`tests.stores`); the recording is real speech (SAVEE clips from
../shared/data joined by pauses of low noise), written under the test's tmp folder; skipped where SAVEE is absent."""

from __future__ import annotations

import base64
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import uvicorn
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import init  # imported before a model loads: it wraps the server's JSON decoding

from emotion.cli import predict
from emotion.serving.requests import AUDIO_DIRS
from emotion.serving.served_timeline import MAX_SECONDS, MAX_SEGMENTS
from emotion.serving.timeline import COLUMNS
from tests.conftest import free_port
from tests.stores import Store
from tests.test_serving import post
from tests.test_timeline import RATE, SAVEE, joined

CLIPS = ("DC_a01.wav", "DC_h01.wav", "DC_n01.wav", "DC_sa01.wav")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four of SAVEE's clips of DC, each after a pause of low noise: about 20 s of FLAC."""
    if not SAVEE.is_dir():
        pytest.skip(f"no SAVEE under {SAVEE}")
    samples, _ = joined([SAVEE / name for name in CLIPS], [0.6, 0.9, 0.7, 1.1, 0.8], np.random.default_rng(7))
    path = tmp_path_factory.mktemp("calls") / "call.flac"
    sf.write(path, samples, RATE)
    return path


@pytest.fixture
def served(store: Store, champion, recording: Path, monkeypatch: pytest.MonkeyPatch) -> mlflow.pyfunc.PyFuncModel:
    """The champion as the server loads it, allowed to read the recording's folder."""
    monkeypatch.setenv(AUDIO_DIRS, str(recording.parent))
    mlflow.set_tracking_uri(store.uri)
    return mlflow.pyfunc.load_model(champion[0])


def sent(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def refused(model: mlflow.pyfunc.PyFuncModel, rows: list[dict], timeline: object = True) -> str:
    """The one line a request is refused with."""
    with pytest.raises(MlflowException) as refusal:
        model.predict(pd.DataFrame(rows), params={"timeline": timeline})
    message = refusal.value.message
    assert "\n" not in message and "/tmp" not in message and "Traceback" not in message, message
    return message


def test_a_timeline_request_gets_a_row_per_segment_as_emotion_predict_does(
    served: mlflow.pyfunc.PyFuncModel, store: Store, champion, recording: Path, tmp_path: Path
) -> None:
    output = tmp_path / "timeline.csv"
    predict.main(["--timeline", str(recording), "--model", champion[0], "--tracking-uri", store.uri, "--format",
                  "csv", "-o", str(output)])  # fmt: skip
    expected = pd.read_csv(output)
    assert len(expected) >= len(CLIPS)

    rows = [{"audio": sent(recording)}, {"path": str(recording), "speaker": "Dee"}]
    answer = served.predict(pd.DataFrame(rows), params={"timeline": True})
    classes = [name for name in expected.columns if name.startswith("prob_")]
    assert list(answer.columns) == ["row", *COLUMNS[1:], *classes]
    for number, speaker in ((0, "row 0"), (1, "Dee")):
        mine = answer[answer["row"] == number].reset_index(drop=True)
        assert set(mine["speaker"]) == {speaker}
        np.testing.assert_allclose(mine[["start", "end"]], expected[["start", "end"]], atol=1e-9)
        np.testing.assert_allclose(mine[classes], expected[classes], atol=5e-5)  # the CSV keeps 4 decimals
        assert mine["emotion"].tolist() == expected["emotion"].tolist()

    clips = [sf.info(SAVEE / name).duration for name in CLIPS]
    turns = [{"start": 0.6, "end": 0.6 + clips[0], "speaker": "Dee"}, {"start": 5.0, "end": 7.5}]
    given = served.predict(pd.DataFrame([{"audio": sent(recording), "segments": turns}]), params={"timeline": True})
    dee, unnamed = given[given["speaker"] == "Dee"], given[given["speaker"] == "row 0"]
    assert len(dee) + len(unnamed) == len(given)  # the given turns, cut where longer than the model judges at once
    assert (dee["start"].min(), dee["end"].max()) == pytest.approx((0.6, 0.6 + clips[0]))
    assert (unnamed["start"].min(), unnamed["end"].max()) == (5.0, 7.5)

    clip = served.predict(pd.DataFrame([{"audio": sent(SAVEE / CLIPS[0])}]))  # without the parameter: one clip
    assert len(clip) == 1 and "silent" in clip.columns
    assert [(p.name, p.default) for p in served.metadata.get_params_schema().params] == [("timeline", False)]
    assert "silero-vad==" in Path(mlflow.pyfunc.get_model_dependencies(champion[0])).read_text()


def test_a_timeline_request_out_of_bounds_is_refused_in_one_line_naming_the_field(
    served: mlflow.pyfunc.PyFuncModel, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))  # where the bytes sent are written
    audio = sent(recording)
    seconds = sf.info(recording).duration
    monkeypatch.setenv(MAX_SECONDS, "10")
    assert refused(served, [{"audio": audio}]) == (
        f"the recording sent (`audio` or `path`) lasts {seconds:.1f} s, longer than the 10 s a timeline takes "
        "(EMOTION_MAX_TIMELINE_SECONDS)"
    )
    monkeypatch.setenv(MAX_SECONDS, "30")
    assert refused(served, [{"audio": audio}, {"path": str(recording)}]).startswith("rows 0 to 1 last ")
    overlapping = [{"start": 0.0, "end": seconds}] * 3
    assert refused(served, [{"path": str(recording), "segments": overlapping}]).startswith(
        f"`segments` cover {3 * seconds:.1f} s, longer than the 30 s a timeline takes (EMOTION_MAX_TIMELINE_SECONDS)"
    )
    monkeypatch.setenv(MAX_SEGMENTS, "3")
    planned = (
        r"the recordings give \d+ segments to classify, more than the 3 a timeline answers \(EMOTION_MAX_SEGMENTS\)"
    )
    assert re.match(planned, refused(served, [{"audio": audio}]))
    assert refused(served, [{"audio": audio, "segments": [{"start": 0, "end": 1}] * 4}]) == (
        "`segments` holds 4 segments, more than the 3 a timeline takes (EMOTION_MAX_SEGMENTS)"
    )

    bad = {
        "not a list": ("three", "`segments` must be a list of segments: [{"),
        "end before start": ([{"start": 0, "end": 1}, {"start": 3, "end": 2}], "`segments[1]`: end 2 is not after "),
        "a text start": ([{"start": "0", "end": 1}], "`segments[0]`.start must be a number of seconds from the "),
        "a negative end": ([{"start": 0, "end": -1}], "`segments[0]`.end must be a number of seconds from the "),
        "an unknown key": ([{"start": 0, "end": 1, "who": "x"}], "`segments[0]` has unknown key(s) ['who']: "),
        "a bad speaker": ([{"start": 0, "end": 1, "speaker": "<b>"}], "`segments[0]`.speaker: "),
    }
    for name, (segments, message) in bad.items():
        assert refused(served, [{"audio": audio}, {"audio": audio, "segments": segments}]).startswith(
            f"row 1: {message}"
        ), name
    assert refused(served, [{"audio": base64.b64encode(b"not audio " * 50).decode()}]).startswith(
        "cannot decode the audio file sent in `audio`: "
    )
    assert refused(served, [{"waveform": [0.0] * 8000, "sample_rate": 16000}]).startswith(
        "unknown column(s) ['sample_rate', 'waveform']: each row takes ['audio', 'path', 'speaker', 'segments']"
    )
    assert refused(served, [{"audio": audio, "segments": []}], timeline=False) == (
        '`segments` are read by a timeline only: send them with "params": {"timeline": true}'
    )
    assert "timeline" in refused(served, [{"audio": audio}], timeline="yes")  # MLflow's own check of the parameter
    assert list((tmp_path / "scratch").iterdir()) == []  # each request's files removed, refused or not


@contextmanager
def scoring_server(model: mlflow.pyfunc.PyFuncModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow's scoring server (the app `mlflow models serve` runs, under uvicorn) serving `model` from a thread of
    this process: real HTTP, without starting a process and loading the model again. Yields its URL."""
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # what `init` sets: undone after the test
    server = uvicorn.Server(uvicorn.Config(init(model), host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_scoring_server_answers_a_timeline_request_and_refuses_bad_params_in_one_line(
    served: mlflow.pyfunc.PyFuncModel, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_SECONDS, "60")
    turns = [{"start": 0.5, "end": 4.0, "speaker": "Dee"}]
    records = [{"audio": sent(recording)}, {"audio": sent(recording), "segments": turns}]
    with scoring_server(served, monkeypatch) as url:
        status, answer = post(f"{url}/invocations", {"dataframe_records": records, "params": {"timeline": True}})
        too_long = post(f"{url}/invocations", {"dataframe_records": records * 2, "params": {"timeline": True}})
        not_boolean = post(f"{url}/invocations", {"dataframe_records": records, "params": {"timeline": "yes"}})
        unknown = post(f"{url}/invocations", {"dataframe_records": records, "params": {"timeline": True, "smooth": 3}})
    assert status == 200, answer
    expected = served.predict(pd.DataFrame(records), params={"timeline": True})
    pd.testing.assert_frame_equal(pd.DataFrame(answer["predictions"]), expected, check_dtype=False, atol=1e-6)
    assert too_long[0] == 400 and too_long[1]["message"].startswith("rows 0 to 3 last ")
    assert not_boolean == (
        400,
        {**not_boolean[1], "message": "`params.timeline` must be true or false (a JSON boolean)"},
    )
    assert (
        unknown[0] == 400 and unknown[1]["message"] == "unknown parameter(s) ['smooth']: the model takes ['timeline']"
    )
