"""The Measure widget: the per-object table of a labels layer (:func:`emseg.segmentation.objects.object_table`:
volume or area, centroid, bounding box, mean intensity of an image layer) in physical units from the layer's scale,
one row per label. Clicking a row moves the viewer to the object's middle slice, centres it and selects its label.
Export CSV writes the table (never over an existing file).
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, Container, Label, PushButton, create_widget
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QTableWidget, QTableWidgetItem

from emseg.napari.common import as_stack, full_resolution, layer_spacing, report
from emseg.segmentation.objects import object_table, write_object_table


class MeasureWidget(Container):
    """Dock widget: labels layer, optional image layer, per slice or per object; Measure, a table, Export CSV."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.labels = create_widget(annotation=napari.layers.Labels, label="objects")
        self.image = create_widget(annotation=napari.layers.Image | None, label="intensity of")
        self.per_slice = CheckBox(text="one row per object and slice", value=False)
        self.measure_button = PushButton(text="Measure")
        self.export_button = PushButton(text="Export CSV...", enabled=False)
        self.status = Label(value="")
        self.extend([self.labels, self.image, self.per_slice, self.measure_button, self.export_button, self.status])
        self.table = QTableWidget()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.cellClicked.connect(lambda row, column: self.jump_to(row))
        self.native.layout().addWidget(self.table)
        self.measure_button.changed.connect(self.measure)
        self.export_button.changed.connect(lambda: self.export(QFileDialog.getSaveFileName(
            caption="Save the object table", filter="CSV (*.csv)")[0]))
        self.rows: list[dict] = []
        self.measured = None

    def measure(self) -> list[dict]:
        """Measure the chosen labels layer and fill the table; returns the rows."""
        layer, image = self.labels.value, self.image.value
        try:
            if layer is None:
                raise ValueError("choose a labels layer to measure")
            labels = np.asarray(as_stack(full_resolution(layer)))
            intensity = None if image is None else np.asarray(as_stack(full_resolution(image)))
            self.rows = object_table(labels, intensity, layer_spacing(layer), self.per_slice.value)
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Measure")
            return []
        self.measured = layer
        columns = list(self.rows[0]) if self.rows else ["label"]
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            for c, key in enumerate(columns):
                value = row[key]
                self.table.setItem(r, c, QTableWidgetItem(f"{value:.4g}" if isinstance(value, float) else str(value)))
        self.export_button.enabled = True
        self.status.value = f"{len(self.rows)} rows from {layer.name} (pixel size {layer_spacing(layer)} um)"
        return self.rows

    def jump_to(self, row: int) -> None:
        """Show the object of table row ``row``: its middle slice, centred, its label selected."""
        found, layer = self.rows[row], self.measured
        spacing = layer_spacing(layer)
        z = found.get("slice", (found.get("first_slice", 0) + found.get("end_slice", 1) - 1) // 2)
        centre_y = found["centroid_y_um"] / spacing[1] * layer.scale[-2] + layer.translate[-2]
        centre_x = found["centroid_x_um"] / spacing[2] * layer.scale[-1] + layer.translate[-1]
        if layer.ndim == 3:
            self.viewer.dims.set_point(0, z * layer.scale[0] + layer.translate[0])
        self.viewer.camera.center = (centre_y, centre_x)
        layer.selected_label = int(found["label"])
        self.table.selectRow(row)

    def export(self, path: str) -> Path | None:
        if not path:
            return None
        try:
            written = write_object_table(self.rows, path)
        except Exception as error:  # any problem is one message in the viewer
            self.status.value = report(error, "Export CSV")
            return None
        self.status.value = f"wrote {written}"
        return written
