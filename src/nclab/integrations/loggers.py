"""TensorBoard / MLflow / wandb loggers (defined in :mod:`nclab.train.loggers`, which nclab's trainer uses too)."""

from nclab.train.loggers import MLflowLogger, TensorBoardLogger, WandbLogger, build_loggers, mlflow_key

__all__ = ["TensorBoardLogger", "MLflowLogger", "WandbLogger", "build_loggers", "mlflow_key"]
