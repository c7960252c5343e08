"""emotion: speech-emotion-recognition studies with Lightning, Hydra, Optuna and MLflow."""

__version__ = "0.1.0"
