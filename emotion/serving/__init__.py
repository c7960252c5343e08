"""Serving a trained model: the predictor (the training's front end and model on waveforms) and its MLflow pyfunc."""
