"""The server's job runner: the photo :class:`~inference_server.pipeline.Reconstructor` plus ``sequence``
jobs on the same warm models (pipeline.py stays the photo composition)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline import CancelFn, ProgressFn, Reconstructor
    from ..protocol import ReconstructArgs, SequenceArgs


class WorkerJobs:
    def __init__(self, reconstructor: Reconstructor) -> None:
        self.reconstructor = reconstructor

    def hello_info(self) -> dict[str, Any]:
        return self.reconstructor.hello_info()

    def reconstruct(self, args: ReconstructArgs, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        return self.reconstructor.reconstruct(args, progress, should_cancel)

    def sequence(self, args: SequenceArgs, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .run import run_sequence, sequence_summary

        output = run_sequence(self.reconstructor, args, progress, should_cancel)
        return {"path": str(output.path), "summary": sequence_summary(output)}
