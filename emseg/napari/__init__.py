"""The napari plugin (front end): emseg's readers, sample data and four dock widgets, declared in ``napari.yaml``
(npe2) and installed with ``pip install 'emseg[napari]'``.

| module | what a biologist sees |
|---|---|
| ``readers`` | File > Open for every stack emseg reads, at its pixel size (zarr lazily) |
| ``samples`` | File > Open Sample > emseg: ISBI 2012 and EPFL slices from a local copy |
| ``segment`` | Segment: a shared model on an image layer, in the background, slice by slice |
| ``finetune`` | Fine-tune: the model on strokes painted in a labels layer, as a run of its bundle |
| ``measure`` | Measure: the per-object table of a labels layer; a row click jumps to the object |
| ``score`` | Score: a layer against a ground-truth layer (challenge scores, per-class Dice) |

Nothing here is needed by the rest of emseg: the core install and the ``emseg`` command work without napari.
"""
