"""Training of evaluation networks (`hdas train`) and the random-sampling baseline."""
from .config import PRESETS, TrainConfig, make_config, validate
from ..runtime import CHECKPOINT, LOG
from .loop import BEST, LAST, build_model, evaluate, train
from .schedule import LRFactor

__all__ = ["PRESETS", "TrainConfig", "make_config", "validate", "train", "evaluate", "build_model",
           "LRFactor", "CHECKPOINT", "LAST", "BEST", "LOG"]
