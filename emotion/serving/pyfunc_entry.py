"""The pyfunc's models-from-code entry: MLflow runs this file when loading, instead of unpickling an object."""

from mlflow.models import set_model

from emotion.serving.pyfunc import EmotionModel

set_model(EmotionModel())
