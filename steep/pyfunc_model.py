"""The model file MLflow logs for steep's pyfunc (models-from-code): no pickled object, only this import.

MLflow runs this file when it logs the model and again when it loads it (with the steep package from the
model's code_paths on sys.path); `steep.logged_model.SummarizerPyfunc.load_context` then loads the artifacts.
Nothing else imports it.
"""

import mlflow.models

from steep.logged_model import SummarizerPyfunc

mlflow.models.set_model(SummarizerPyfunc())
