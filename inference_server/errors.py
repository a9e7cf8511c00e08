"""Typed errors the worker reports to its users (the ``error`` event of the protocol).

Every error carries a machine code from the contract, a message that says what is wrong and a fix that
says what the user can do. Stages raise these; the server and the CLI turn them into events / messages.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of all errors a user should see. ``code`` is one of ``protocol.ERROR_CODES``."""

    code = "internal"

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class BadRequestError(WorkerError):
    """A request whose arguments cannot work (an output path that cannot be written, no CUDA, ...)."""

    code = "bad_request"


class BadImageError(WorkerError):
    code = "bad_image"


class NoFaceError(WorkerError):
    code = "no_face"


class MissingAssetError(WorkerError):
    code = "missing_asset"


class BadCheckpointError(WorkerError):
    code = "bad_checkpoint"


class BadModelFileError(MissingAssetError):
    """A FLAME model / landmark / index file that exists but cannot be used."""


class OutOfMemoryError(WorkerError):
    code = "out_of_memory"


class IOFailedError(WorkerError):
    """Reading or writing a file failed in the operating system (full disk, permissions, read-only).

    The message names the path, the OS's reason and the free space there (see ``atomic_io.io_failure``).
    """

    code = "io_error"


class CancelledError(Exception):
    """Raised inside a stage when the user cancelled the job (not an error: the job ends ``cancelled``)."""
