"""The Fine-tune widget: paint strokes (or correct a class mask) in a labels layer, fine-tune the model on them in
the background with a live loss curve, then segment again with the new run and compare.

The strokes layer holds the model's classes as a class mask does (value ``v`` = class ``v``, 0 = not painted); "New
strokes layer" makes one, named with its legend. Fine-tune writes the painted slices as a new data set
(:func:`emseg.finetune.write_painted_dataset`) and runs the bundle's own fine-tuning (``train.json`` +
``finetune.json``, :func:`emseg.finetune.finetune_command`) in a process of its own: the run gets its folder under
the bundle's ``runs/`` and its MLflow run like any other, and records the painted folder, split and parent. Cancel
stops it as SIGTERM does (the run saves a checkpoint and is marked KILLED). The run is not promoted by itself:
Promote and Pack do what ``emseg bundle promote`` and ``emseg bundle pack`` do.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import Container, Label, LineEdit, PushButton, SpinBox, create_widget
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emseg.bundle.pack import pack_bundle
from emseg.engine.runs import promote
from emseg.engine.tracking import unique_run_name
from emseg.engine.trained import open_model
from emseg.finetune import (
    Painting,
    finetune_command,
    legend,
    painted_folder,
    painting_classes,
    read_losses,
    write_painted_dataset,
)
from emseg.napari.common import CLASS_NAMES, as_stack, background, full_resolution, report
from emseg.napari.segment import SegmentWidget


def parent_overrides(bundle: Path, network: dict | None) -> dict:
    """The parent network's keyword arguments that are also top-level keys of the bundle's ``train.json``
    (``features``): the fine-tuned network is built as wide as its parent."""
    config = json.loads((bundle / "configs" / "train.json").read_text())
    return {key: value for key, value in (network or {}).items() if key in config and not key.startswith("_")}


def run_training(argv: list[str], run_dir: Path, log: Path):
    """Generator run by the worker: start the training process, yield its losses so far every half second, and
    stop it (SIGTERM) when the worker is told to quit. Raises with the process's last line if it fails."""
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir.parent)
    try:
        while process.poll() is None:
            time.sleep(0.5)
            yield read_losses(run_dir)
    finally:
        if process.poll() is None:  # the worker was quit (Cancel) or the viewer closed
            process.terminate()
            process.wait(timeout=120)
    yield read_losses(run_dir)
    if process.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise RuntimeError(f"{lines[-1] if lines else 'training failed'} (the whole log: {log})")


class FineTuneWidget(Container):
    """Dock widget: bundle and parent, image and strokes layers, schedule; Fine-tune, Cancel, a loss curve; then
    the run's folder, Promote, Pack and a Segment section preset to the new run."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.bundle = LineEdit(label="bundle", tooltip="the bundle folder whose train.json and finetune.json train")
        self.init_from = LineEdit(label="start from", tooltip="the parent model (empty: the bundle's promoted model)"
                                                              "; a run folder, zip, weights file or models:/NAME/V")
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.strokes = create_widget(annotation=napari.layers.Labels, label="strokes")
        self.new_strokes = PushButton(text="New strokes layer")
        self.epochs = SpinBox(label="epochs", value=30, min=1, max=1000)
        self.epoch_length = SpinBox(label="iterations per epoch", value=10, min=1, max=10000)
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.promote_button = PushButton(text="Promote the run", enabled=False)
        self.pack_button = PushButton(text="Pack the run", enabled=False)
        self.figure = Figure(figsize=(3, 2), tight_layout=True)
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)  # room for the axes' labels in a narrow dock
        self.segment = SegmentWidget(napari_viewer)
        self.segment_heading = Label(value="Segment again (set to the new run when it finishes):")
        self.extend([self.bundle, self.init_from, self.image, self.strokes, self.new_strokes, self.epochs,
                     self.epoch_length, self.run_button, self.cancel_button, self.status, self.promote_button,
                     self.pack_button])
        self.status.native.setWordWrap(True)
        self.native.layout().addWidget(self.canvas)
        self.native.layout().addWidget(self.segment_heading.native)
        self.native.layout().addWidget(self.segment.native)
        self.new_strokes.changed.connect(self.add_strokes_layer)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.promote_button.changed.connect(self.promote_run)
        self.pack_button.changed.connect(self.pack_run)
        self.overrides: dict = {}  # more bundle keys for the training (tests: a tiny patch size)
        self.worker = None
        self.run_dir: Path | None = None
        self.dataset_dir: Path | None = None
        self.losses: list[tuple[int, float]] = []

    def reset_choices(self, *args) -> None:
        super().reset_choices(*args)
        self.segment.reset_choices(*args)

    # --- what is painted ------------------------------------------------------------------------------------
    def parent_source(self) -> str:
        return self.init_from.value.strip() or self.bundle.value.strip()

    def parent_classes(self) -> list[str]:
        names = open_model(self.parent_source()).class_names
        if not names:
            raise ValueError(f"{self.parent_source()}: saved no class names, so strokes cannot name classes")
        return names

    def add_strokes_layer(self):
        """An empty labels layer over the image, for strokes in the parent's classes; returns it."""
        try:
            names, image = self.parent_classes(), self.image.value
            if image is None:
                raise ValueError("choose the image layer to paint over first")
            shape = full_resolution(image).shape
            layer = self.viewer.add_labels(np.zeros(shape, np.uint8), name=f"strokes ({legend(names)})",
                                           scale=image.scale, translate=image.translate,
                                           metadata={CLASS_NAMES: names})
            self.strokes.reset_choices()
            self.strokes.value = layer
            self.status.value = f"paint with label {legend(names)}; 0 (the eraser) = not painted"
            return layer
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "New strokes layer")
            return None

    # --- the training -----------------------------------------------------------------------------------------
    def start(self):
        """Write the painted data set and start the fine-tuning; returns the worker (tests wait on it)."""
        try:
            bundle = Path(self.bundle.value.strip()).expanduser().resolve()
            if not (bundle / "configs" / "finetune.json").is_file():
                raise FileNotFoundError(f"{bundle}: not a bundle folder with configs/finetune.json; choose the "
                                        f"bundle that trains the model")
            image, strokes = self.image.value, self.strokes.value
            if image is None or strokes is None:
                raise ValueError("choose the image layer and the strokes layer first")
            parent = open_model(self.parent_source())
            names = parent.class_names or []
            painting: Painting = painting_classes(names)
            stack = np.asarray(as_stack(full_resolution(image)))
            painted = painting.from_class_values(as_stack(np.asarray(full_resolution(strokes))), names)
            folder = write_painted_dataset(stack, painted, painted_folder(bundle, image.name), painting)
            run_name = unique_run_name(f"{bundle.name}-napari")
            argv = finetune_command(bundle, folder, self.parent_source() if self.init_from.value.strip() else bundle,
                                    painting, run_name, self.epochs.value, self.epoch_length.value,
                                    **{**parent_overrides(bundle, parent.network_def), **self.overrides})
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Fine-tune")
            return None
        self.run_dir, self.losses = bundle / "runs" / run_name, []
        self.dataset_dir = folder
        log = Path(tempfile.mkdtemp(prefix="emseg-finetune-")) / f"{run_name}.log"
        self.worker = background(run_training, argv, self.run_dir, log, action="Fine-tune", status=self.status,
                                 yielded=self._plot, finished=self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.promote_button.enabled = self.pack_button.enabled = False
        self.status.value = f"fine-tuning run {run_name} on {folder}"
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "stopping the training (it saves a checkpoint first)"

    def _plot(self, losses: list[tuple[int, float]]) -> None:
        if losses == self.losses:
            return
        self.losses = losses
        self.axes.clear()
        self.axes.plot([e for e, _ in losses], [v for _, v in losses], marker="o")
        self.axes.set_xlabel("epoch")
        self.axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.axes.set_ylabel("training loss")
        self.canvas.draw_idle()

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        record = self.run_record()
        if record.get("status") == "FINISHED":
            self.promote_button.enabled = self.pack_button.enabled = True
            self.segment.model.value = str(self.run_dir)
            self.segment.image.value = self.image.value
            self.status.value = f"run {self.run_dir.name} finished ({len(self.losses)} epochs): segment again below"
        elif not self.status.value.startswith("Fine-tune:"):
            self.status.value = f"run {self.run_dir.name} is {record.get('status', 'not started')}"

    def run_record(self) -> dict:
        path = self.run_dir / "run.json" if self.run_dir else None
        return json.loads(path.read_text()) if path and path.is_file() else {}

    # --- after the training -------------------------------------------------------------------------------------
    def promote_run(self) -> None:
        try:
            target = promote(self.run_dir, self.run_dir.parent.parent / "models")
            self.status.value = f"promoted run {self.run_dir.name} to {target}"
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Promote")

    def pack_run(self) -> None:
        try:
            packed = pack_bundle(self.run_dir.parent.parent, run_name=self.run_dir.name)
            self.status.value = f"packed run {self.run_dir.name} into {packed}"
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Pack")
