"""MLflow "model from code" entry point: the pyfunc model is this file's ``set_model`` call
(see :mod:`flts.mlflow_pyfunc`). Importing it registers the model with MLflow; nothing else."""

import mlflow

from flts.mlflow_pyfunc import FltsPyfuncModel

mlflow.models.set_model(FltsPyfuncModel())
