"""What runs MONAI's Ignite engines the emseg way (runtime layer).

Compute: mixed precision and layout (``precision``), the windows a slice is predicted in (``windows``), test-time augmentation (``tta``), memory the allocator keeps (``allocator``),
what torchrun ranks agree on (``distributed``), weight averaging (``averaging``), a trained model and starting from
one (``trained``), learning from unlabelled slices (``semi``). Record-keeping: where a bundle and its outputs live
(``paths``), run folders (``runs``), MLflow tracking and the registry (``tracking``, ``registry``), tracking on
while the server is away (``offline``), handlers MONAI lacks (``handlers``). Compute modules never import
record-keeping ones (``tests/test_layout.py``)."""

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
