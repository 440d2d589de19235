"""Readers for the chest X-ray datasets' own files, returning box tables and label tables as pandas DataFrames.

Every reader returns one DataFrame and attaches a :class:`ReadReport` as ``df.attrs["report"]`` (also logged at INFO
level on the ``dadam.formats`` logger). Nothing is dropped silently: a bad row is skipped and counted under a reason
in ``report.skipped``; a label name without a mapping is counted in ``report.unknown_labels``; a name the mapping
deliberately excludes (maps to None) is counted in ``report.excluded_labels``. A file whose header is not the expected
one raises ``ValueError`` naming the file and the expected columns; a missing file raises ``FileNotFoundError``.

Box table (:func:`read_nih_boxes`, :func:`read_vindr`, :func:`read_chestx_det`), one row per box:

=============== ==========================================================================================
``image_id``    file name as in the dataset (``00001369_000.png``, ``<id>.dicom``, ``36204.png``)
``label``       canonical CXR-LT class (one of :data:`dadam.labels.CXR_LT_CLASSES`)
``source_label`` the name the dataset uses (``Infiltrate``, ``Nodule/Mass``, ...)
``x0 y0 x1 y1`` float pixels, xyxy, top-left origin, half-open (``img[y0:y1, x0:x1]`` is the box)
``width height`` size in pixels of the image the coordinates refer to; NaN where unknown
``source``      ``"nih"``, ``"vindr"`` or ``"chestx_det"``
``rater``       radiologist id(s) (VinDr: ``"R8"``; fused boxes: ``"R8,R9"``), else ``""``
=============== ==========================================================================================

The image of a box is ``image_root / image_id``. :func:`read_chestx_det` adds ``polygon`` (list of ``[x, y]`` or None).
The checks every box passes, and their skip reasons, are listed in :mod:`dadam.formats.boxes`.

Label table (:func:`read_nih_labels`, :func:`read_mimic`, :func:`read_cxr_lt`), one row per image (or study):
``image_id``, ``path`` (relative to the dataset root), one float column per CXR-LT class named exactly as
:data:`~dadam.labels.CXR_LT_CLASSES` (1.0 positive, 0.0 negative, NaN = the source does not say), ``source``, plus
source-specific columns listed in each reader. :func:`read_mura` returns its own table (MURA is not a chest dataset).
:func:`read_label_table` reads a label table in any of :data:`LABEL_FORMATS`; :func:`labels_tensor` gives its
``(N, C)`` label matrix and :func:`lung_boxes_tensor` its optional lung-box columns (:data:`LUNG_BOX_COLUMNS`).

Modules: ``report`` (:class:`ReadReport`), ``common`` (file, header and cell helpers shared by the readers), ``boxes``
(the box table and its checks), one module per dataset (``nih``, ``vindr``, ``chestx_det``, ``mimic`` with CXR-LT,
``mura``) and ``label_table``.
"""

from dadam.formats.boxes import BORDER_TOLERANCE, BOX_COLUMNS
from dadam.formats.chestx_det import read_chestx_det
from dadam.formats.label_table import (
    LABEL_FORMATS,
    LUNG_BOX_COLUMNS,
    labels_tensor,
    lung_boxes_tensor,
    read_label_table,
)
from dadam.formats.mimic import read_cxr_lt, read_mimic
from dadam.formats.mura import read_mura
from dadam.formats.nih import read_nih_boxes, read_nih_labels
from dadam.formats.report import ReadReport
from dadam.formats.vindr import read_vindr

__all__ = [
    "BORDER_TOLERANCE",
    "BOX_COLUMNS",
    "LABEL_FORMATS",
    "LUNG_BOX_COLUMNS",
    "ReadReport",
    "labels_tensor",
    "lung_boxes_tensor",
    "read_chestx_det",
    "read_cxr_lt",
    "read_label_table",
    "read_mimic",
    "read_mura",
    "read_nih_boxes",
    "read_nih_labels",
    "read_vindr",
]
