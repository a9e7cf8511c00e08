"""One item at a time with a warm :class:`~inference_server.pipeline.Reconstructor`: the ``local`` engine,
and the work each Ray actor does (``ray_engine``) — the same code, so both engines write the same files.

An item's failure is its own: any error becomes a ``failed`` outcome (a :class:`WorkerError` keeps its code,
message and fix; anything else is ``internal`` with the exception's text) and the batch goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WorkerError
from ..speed_switches import apply_switches, result_switches
from .items import BatchItem
from .records import RESULT_FILE, ItemOutcome, read_done, write_item_record

#: The bundled sample photo: a real face for the detector's first (slow) call during warm-up.
WARM_UP_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "sample_occluded_face.jpg"

if TYPE_CHECKING:
    from ..assets_config import AssetConfig
    from ..pipeline import Reconstructor
    from ..protocol import ReconstructArgs


@dataclass(frozen=True)
class JobOptions:
    """Everything an engine needs to reconstruct any item: picklable, so Ray can ship it to its actors.

    ``request`` is the reconstruction request with an empty image and output; each item fills those in.
    ``all_faces``: one result per detected face, in ``<item>/face_N/`` (N as ``ofer-worker faces`` lists them).
    """

    request: ReconstructArgs
    assets: AssetConfig
    device: str = "auto"
    backend: str = "torch"
    precision: str = "fp32"
    threads: int | None = None
    millimetres: bool = False
    #: Which hypotheses get a PLY file (``mesh_export.MESH_CHOICES``).
    meshes: str = "all"
    contact_sheet: bool = True
    all_faces: bool = False
    #: The speed switches every item runs with (``speed_switches.py``), as the shell that started the batch set
    #: them; None: the runner's own environment as it is (tests, scripts).
    switches: dict[str, str] | None = None

    def fingerprint(self) -> str:
        """Hash of what decides an item's files: the request (less image and output) and the export options."""
        request = dataclasses.asdict(self.request)
        request.pop("image"), request.pop("output")
        settings = {"request": request, "millimetres": self.millimetres, "contact_sheet": self.contact_sheet,
                    "backend": self.backend, "precision": self.precision, "all_faces": self.all_faces}  # fmt: skip
        if self.meshes != "all":  # only when set, as the switches below
            settings["meshes"] = self.meshes
        changing = result_switches(self.switches or {})
        if changing:  # only when set, so that a default run's fingerprint stays what earlier versions wrote
            settings["switches"] = changing
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def item_request(self, item: BatchItem, folder: Path, face: int | None = None) -> ReconstructArgs:
        face = self.request.face if face is None else face
        return dataclasses.replace(self.request, image=item.image, output=str(folder / RESULT_FILE), face=face)


def split_done(items: list[BatchItem], out_root: Path, fingerprint: str) -> tuple[list[BatchItem], list[ItemOutcome]]:
    """Items still to do, and the outcomes (status ``skipped``) of those an earlier run finished."""
    pending: list[BatchItem] = []
    skipped: list[ItemOutcome] = []
    for item in items:
        done = read_done(out_root / item.id, fingerprint)
        if done is None:
            pending.append(item)
        else:
            skipped.append(dataclasses.replace(done, status="skipped", image=item.image))
    return pending, skipped


class ItemRunner:
    """A warm reconstructor that turns items into result folders and outcomes."""

    def __init__(self, options: JobOptions, *, warm: bool = False) -> None:
        from ..backends import configure_cpu_threads
        from ..pipeline import Reconstructor, choose_device

        if options.switches is not None:  # before anything reads them (a Ray actor's node may set others)
            apply_switches(options.switches)
        configure_cpu_threads(options.threads)
        self.options = options
        self.fingerprint = options.fingerprint()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.reconstructor: Reconstructor = Reconstructor(
            options.assets, device=options.device, backend=options.backend, precision=options.precision
        )
        #: Set when warming up failed: every item then fails with it at once (no reload per item).
        self.broken: WorkerError | None = None
        if warm:
            try:
                self._warm_up(choose_device(options.device))
            except WorkerError as exc:
                self.broken = exc

    def _warm_up(self, device: Any) -> None:
        """Load every model and run the detector once, so that the first item's time is only its own."""
        from ..preprocess.image import load_image

        bundle = self.reconstructor.bundle(device)
        self.reconstructor.flame_layer(bundle, device)
        self.reconstructor.detector().detect(load_image(WARM_UP_PHOTO))

    def run(self, item: BatchItem, out_root: Path) -> ItemOutcome:
        folder = out_root / item.id
        start = time.perf_counter()
        outcome = ItemOutcome(id=item.id, image=item.image, status="ok", output=str(folder),
                              worker=self.worker, fingerprint=self.fingerprint)  # fmt: skip
        try:
            if self.broken is not None:
                raise self.broken
            outcome.seconds, outcome.results = self._reconstruct(item, folder)
        except WorkerError as exc:
            outcome.status, outcome.error_code = "failed", exc.code
            outcome.error_message, outcome.fix = exc.message, exc.fix
        except Exception as exc:  # one item's unexpected failure must not end the batch
            outcome.status, outcome.error_code = "failed", "internal"
            outcome.error_message = f"{type(exc).__name__}: {exc}"
            outcome.fix = "Report this with the item's item.json: " + traceback.format_exc(limit=3)[-500:]
        outcome.seconds_total = time.perf_counter() - start
        outcome.finished_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        write_item_record(outcome)
        return outcome

    def _reconstruct(self, item: BatchItem, folder: Path) -> tuple[dict[str, float], list[str]]:
        """The item's stage times (summed over its faces) and its result files, relative to ``folder``."""
        if not self.options.all_faces:
            return self._reconstruct_face(item, folder, None), [RESULT_FILE]
        from ..preprocess.image import load_image

        box = self.options.request.box
        faces = self.reconstructor.detector().detect_all(load_image(item.image), box=box)
        seconds: dict[str, float] = {}
        results = []
        for face in faces:
            part = self._reconstruct_face(item, folder / f"face_{face.index}", face.index)
            seconds = {stage: seconds.get(stage, 0.0) + part.get(stage, 0.0) for stage in seconds | part}
            results.append(f"face_{face.index}/{RESULT_FILE}")
        return seconds, results

    def _reconstruct_face(self, item: BatchItem, folder: Path, face: int | None) -> dict[str, float]:
        from ..mesh_export import export_hypotheses

        folder.mkdir(parents=True, exist_ok=True)
        request = self.options.item_request(item, folder, face)
        output = self.reconstructor.run(request, _no_progress, lambda: False)
        start = time.perf_counter()
        export_hypotheses(output.result, folder, millimetres=self.options.millimetres, meshes=self.options.meshes)
        if self.options.contact_sheet:
            from ..contact_sheet import write_contact_sheet

            write_contact_sheet(folder / "contact_sheet.png", output)
        return dict(output.seconds) | {"export": time.perf_counter() - start}


def _no_progress(stage: str, done: int, total: int, message: str = "") -> None:
    """Batches report per item, not per stage."""


def run_local(items: list[BatchItem], options: JobOptions, out_root: Path) -> Iterator[ItemOutcome]:
    """The ``local`` engine: every item in this process, one after another, with one warm reconstructor."""
    runner = ItemRunner(options, warm=True)
    for item in items:
        yield runner.run(item, out_root)
