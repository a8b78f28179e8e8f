"""What runs MONAI's Ignite engines the emseg way: mixed precision and layout (``precision``), the windows a
slice is predicted in (``windows``), test-time augmentation (``tta``), memory the allocator keeps (``allocator``),
handlers MONAI lacks (``handlers``) and MLflow tracking (``tracking``)."""

from emseg.engine import allocator, handlers, precision, tracking, tta, windows

__all__ = ["allocator", "handlers", "precision", "tracking", "tta", "windows"]
