"""The review queue: a person labels kept samples; the labels leave as an image folder.

``GET /review`` shows the newest rejected, failed and low-confidence samples as a grid;
each has one button per class (CSRF-checked form posts, no script needed).
``GET /review/export.zip`` is every labelled sample in the ``folder:DIR`` layout
(``<class>/<device>-<sample id>.<ext>``, plus ``labels.csv``): unzip it and
``edgectl build --data folder:DIR`` trains on it. ``edgectl fleet export-labels DIR``
fetches and unpacks it in one step.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edgectl.collector.api.deps import SettingsDep, StoreDep, inside, safe_name
from edgectl.collector.api.errors import invalid
from edgectl.collector.names import is_safe_name
from edgectl.collector.web import data
from edgectl.collector.web.render import render
from edgectl.collector.web.session import FormViewer, Viewer

router = APIRouter()
SHOWS = ("todo", "done", "all")


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, _: Viewer, store: StoreDep,
                show: Annotated[str, Query(pattern="^(todo|done|all)$")] = "todo",
                ) -> HTMLResponse:
    return render(request, "review.html", page="review", r=data.review(store, show))


@router.post("/review/label")
def label_sample(request: Request, who: FormViewer, store: StoreDep,
                 device: Annotated[str, Form()], sample_id: Annotated[str, Form()],
                 label: Annotated[str, Form()],
                 show: Annotated[str, Form()] = "todo") -> Response:
    """Record what a sample shows; back to the queue (the next unlabelled one)."""
    labels, _ = data.class_labels(store)
    if label not in labels or not is_safe_name(label):
        raise invalid(("body", "label"), f"unknown class (one of {', '.join(labels)})")
    if not store.set_review_label(safe_name(device), safe_name(sample_id, "sample id"),
                                  label, who):
        raise HTTPException(404, "no such sample")
    return RedirectResponse(f"/review?show={show if show in SHOWS else 'todo'}",
                            status_code=303)


@router.get("/review/export.zip")
def export_labels(_: Viewer, store: StoreDep, settings: SettingsDep) -> Response:
    """Every labelled sample as ``<class>/<device>-<id>.<ext>`` in a zip, with
    ``labels.csv`` (device, sample id, label, model label, labelled at)."""
    buf = io.BytesIO()
    n = 0
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "device", "sample_id", "label", "model_label", "labelled_at"])
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for row in store.review_labels():
            src = inside(settings.data_dir, *Path(row["path"]).parts)
            if not src.is_file() or not is_safe_name(row["label"]):
                continue  # a sample file removed since: nothing to train on
            name = f"{row['label']}/{row['device']}-{row['sample_id']}{src.suffix.lower()}"
            zf.write(src, name)  # JPEG/PNG: already compressed
            writer.writerow([name, row["device"], row["sample_id"], row["label"],
                             row["model_label"] or "", f"{row['labelled_at']:.3f}"])
            n += 1
        zf.writestr("labels.csv", table.getvalue())
    if n == 0:
        raise HTTPException(404, "no labelled samples to export yet")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Response(buf.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="edgectl-labels-{stamp}.zip"',
        "X-Labels": str(n), "Cache-Control": "no-store"})
