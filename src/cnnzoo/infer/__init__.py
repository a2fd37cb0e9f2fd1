"""Using a trained model: evaluate it on a data split, classify image files, export it.

`cnnzoo eval`, `cnnzoo predict` and `cnnzoo export` are thin commands over
`evaluate_checkpoint`, `predict_images` and `export_model`; `deploy` builds a faster backend
(BatchNorm folded, torch.compile, ONNX Runtime, OpenVINO, int8, bf16) checked against eager.
All three read a checkpoint written by `cnnzoo train` (with `torch.load(weights_only=True)`)
or a safetensors export, rebuild the registered model in eval mode, and feed it the way
training did (`Preprocess`, recorded in the checkpoint).
"""

from cnnzoo.checkpoint import ModelInfo, Preprocess, load_safetensors_model
from cnnzoo.infer.backends import Deployed, DeployMismatchError, deploy, fold_batchnorm
from cnnzoo.infer.evaluate import EvalResult, evaluate_checkpoint, evaluate_model, write_report
from cnnzoo.infer.export import ExportMismatchError, ExportResult, export_model
from cnnzoo.infer.loading import load_model
from cnnzoo.infer.predict import Prediction, Predictor, predict_images, read_image

__all__ = [
    "DeployMismatchError",
    "Deployed",
    "EvalResult",
    "ExportMismatchError",
    "ExportResult",
    "ModelInfo",
    "Prediction",
    "Predictor",
    "Preprocess",
    "deploy",
    "evaluate_checkpoint",
    "evaluate_model",
    "export_model",
    "fold_batchnorm",
    "load_model",
    "load_safetensors_model",
    "predict_images",
    "read_image",
    "write_report",
]
