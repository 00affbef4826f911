"""MLflow "model from code" entry point: the pyfunc model is this file's ``set_model`` call
(see :mod:`benchmarks.mlflow_pyfunc`). Importing it registers the model with MLflow; nothing
else."""

import mlflow

from benchmarks.mlflow_pyfunc import FltsPyfuncModel

mlflow.models.set_model(FltsPyfuncModel())
