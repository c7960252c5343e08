"""`emotion-export`: a trained model as ONNX files that ONNX Runtime, numpy and soundfile run alone (docs/export.md).

emotion-export models:/emotion@champion exported/            # the champion: encoder.onnx, head.onnx, model.json...
emotion-export runs:/RUN_ID exported/ --tracking-uri sqlite:///mlruns.db
emotion-export model.skops exported/ --int8                   # a model file; the encoder quantised to int8

Only Whisper features with a scikit-learn head export (the `experiment=whisper_base_adaptive` recipe).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emotion.cli import errors_as_one_line
from emotion.config import logger_defaults
from emotion.errors import EmotionError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emotion-export", description="Write a trained model as ONNX files.")
    parser.add_argument(
        "model", help="a model file (.skops), runs:/RUN_ID, or an MLflow model URI (models:/NAME@ALIAS)"
    )
    parser.add_argument("output", type=Path, help="the folder to write (new, or empty)")
    parser.add_argument("--tracking-uri", default=logger_defaults()["tracking_uri"], help="default: %(default)s")
    parser.add_argument(
        "--int8", action="store_true", help="quantise the encoder's weights to int8 (dynamic quantisation)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parse_args(argv)
    with errors_as_one_line():
        from emotion.serving.files import load_recognizer
        from emotion.serving.onnx_export import export_model
        from emotion.serving.recognizer import EmotionRecognizer

        if Path(args.model).is_file():
            recognizer = EmotionRecognizer.from_checkpoint(args.model)
        elif Path(args.model).suffix in (".skops", ".ckpt"):
            raise EmotionError(f"no model file {args.model}")
        else:
            recognizer = load_recognizer(args.model, args.tracking_uri)
        folder = export_model(recognizer, args.output, int8=args.int8)
    print(f"wrote {folder}: encoder.onnx, head.onnx, model.json, constants.npz")


if __name__ == "__main__":
    main()
