"""Detection: the letterbox (``preprocess``), cached exports (``engines``), the model (``detector``) and the
inference worker that batches the frames of all cameras sharing a model (``worker``)."""

from monitor.detection.detector import (
    MAX_DETECTIONS,
    TRACKER_LOW_CONF,
    ClassThresholds,
    Detector,
    ModelLoadError,
    choose_device,
    load_detectors,
    load_model,
)
from monitor.detection.worker import InferenceEvents, InferenceWorker, NullInferenceEvents, is_cuda_error

__all__ = [
    "MAX_DETECTIONS", "TRACKER_LOW_CONF", "ClassThresholds", "Detector", "InferenceEvents", "InferenceWorker",
    "ModelLoadError", "NullInferenceEvents", "choose_device", "is_cuda_error", "load_detectors", "load_model",
]
