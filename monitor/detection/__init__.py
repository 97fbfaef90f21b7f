"""Detection: the letterbox (``preprocess``), cached exports (``engines``), the model (``detector``), a model
served by Triton (``triton``), which of the two a model gets (``loading``) and the inference worker that batches
the frames of all cameras sharing a model (``worker``)."""

from monitor.detection.detector import (
    MAX_DETECTIONS,
    TRACKER_LOW_CONF,
    ClassThresholds,
    Detector,
    ModelLoadError,
    choose_device,
    load_model,
)
from monitor.detection.loading import build_detector, load_detectors
from monitor.detection.worker import (
    InferenceEvents,
    InferenceFailed,
    InferenceWorker,
    NullInferenceEvents,
    is_cuda_error,
)

__all__ = [
    "MAX_DETECTIONS", "TRACKER_LOW_CONF", "ClassThresholds", "Detector", "InferenceEvents", "InferenceFailed", "InferenceWorker",
    "ModelLoadError", "NullInferenceEvents", "build_detector", "choose_device", "is_cuda_error", "load_detectors",
    "load_model",
]
