"""What runs MONAI's Ignite engines the emseg way: mixed precision and layout (``precision``), the windows a
slice is predicted in (``windows``), test-time augmentation (``tta``), memory the allocator keeps (``allocator``),
what torchrun ranks agree on (``distributed``),
handlers MONAI lacks (``handlers``), MLflow tracking (``tracking``), a trained model and starting from one
(``trained``) and learning from unlabelled slices (``semi``)."""

from emseg.engine import (
    allocator,
    distributed,
    handlers,
    precision,
    semi,
    tracking,
    trained,
    tta,
    windows,
)

__all__ = ["allocator", "distributed", "handlers", "precision", "semi", "tracking", "trained", "tta", "windows"]
