"""What runs MONAI's Ignite engines the emseg way: mixed precision and layout (``precision``), the windows a
slice is predicted in (``windows``), test-time augmentation (``tta``), memory the allocator keeps (``allocator``),
what torchrun ranks agree on (``distributed``),
handlers MONAI lacks (``handlers``) and MLflow tracking (``tracking``)."""

from emseg.engine import (
    allocator,
    distributed,
    handlers,
    precision,
    tracking,
    tta,
    windows,
)

__all__ = ["allocator", "distributed", "handlers", "precision", "tracking", "tta", "windows"]
