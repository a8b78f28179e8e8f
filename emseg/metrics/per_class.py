"""Per-class Dice and IoU as Ignite metric handlers, one per class, for multi-class validation.

MONAI's ``MeanDice``/``MeanIoUHandler`` average over classes; a config that wants each class
logged (to MLflow, per epoch) needs one handler per class. :func:`per_class_metrics` builds
them from the class names, so a bundle's config stays one line whatever the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.handlers import MeanDice, MeanIoUHandler

from emseg.metrics.monai_metrics import channel_output


def per_class_metrics(class_names: Sequence[str], prefix: str = "val_", include_background: bool = False) -> dict:
    """``{prefix}dice_<class>`` and ``{prefix}iou_<class>`` handlers over one-hot ``pred``/``label`` channels."""
    metrics = {}
    for channel, name in enumerate(class_names):
        if channel == 0 and not include_background:
            continue
        metrics[f"{prefix}dice_{name}"] = MeanDice(include_background=True, output_transform=channel_output(channel))
        metrics[f"{prefix}iou_{name}"] = MeanIoUHandler(include_background=True,
                                                        output_transform=channel_output(channel))
    return metrics
