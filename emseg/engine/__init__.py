"""What runs MONAI's Ignite engines the emseg way: mixed precision and layout (``precision``), test-time
augmentation (``tta``), handlers MONAI lacks (``handlers``) and MLflow tracking (``tracking``)."""

from emseg.engine import handlers, precision, tracking, tta

__all__ = ["handlers", "precision", "tracking", "tta"]
