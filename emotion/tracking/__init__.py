"""Experiment tracking with MLflow: runs, params, metrics, artifacts and checkpoints."""
