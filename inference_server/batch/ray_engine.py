"""The ``ray`` engine: the batch's items through Ray Data, on an actor pool of warm reconstructors.

Each actor builds one :class:`~inference_server.batch.runner.ItemRunner` (all models loaded once, in its
constructor) and then takes one item at a time; an actor asks for its next item only when it is free, so a
slow photo never holds others back behind it. The driver (this process) only lists the items, streams the
outcomes back as they finish and writes the summary; every result file is written by the actor that made
it, straight into the output folder — on a cluster that folder (and the photos, and the model files) must
be on storage every node sees at the same path.

- No ``--address``: a local Ray is started for the batch and stopped after it.
- ``--address auto`` or ``ray://host:10001`` (or ``RAY_ADDRESS``): an existing cluster. Its nodes need this
  worker installed (``pip install 'ofer-blender-worker[ray]'``) in the Python Ray runs.

Ray is an optional extra (``[ray]``): the Blender add-on's worker never carries it, and this module imports
it only when the engine runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadRequestError, WorkerError
from .items import BatchItem
from .records import ItemOutcome
from .runner import ItemRunner, JobOptions

_INSTALL_FIX = "Install the Ray extra in the worker's environment: pip install 'ofer-blender-worker[ray]'."
#: Blocks of the item dataset: enough that every actor always finds work, few enough to schedule cheaply.
MAX_BLOCKS = 2000


@dataclass(frozen=True)
class RayOptions:
    """The actor pool: ``actors`` reconstructors, each holding ``cpus`` CPUs and ``gpus`` GPUs of a node."""

    actors: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    address: str | None = None


class ReconstructActor:
    """Ray Data's callable class: one warm reconstructor per actor, batches of one item."""

    def __init__(self, options: JobOptions, out_root: str) -> None:
        self.runner = ItemRunner(options, warm=True)
        self.out_root = Path(out_root)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [self.runner.run(BatchItem(str(i), str(p)), self.out_root) for i, p in
                    zip(batch["id"], batch["image"], strict=True)]  # fmt: skip
        return {"record": np.array([outcome.to_json() for outcome in outcomes], dtype=object)}


def pool_options(
    *, actors: int | None, cpus: float | None, gpus: float | None, address: str | None, device: str
) -> RayOptions:
    """Fill in the defaults: one actor per GPU (device cuda/auto on a cluster with GPUs), else ``actors``
    actors sharing the CPUs of a local Ray; each actor's CPUs are what its torch threads use."""
    import ray

    total = ray.cluster_resources()
    cluster_gpus = int(total.get("GPU", 0))
    if gpus is None:
        gpus = 1.0 if device in ("auto", "cuda") and cluster_gpus else 0.0
    if device == "cuda" and not cluster_gpus:
        raise BadRequestError("device 'cuda' was asked for, but this Ray cluster has no GPU", "Use --device cpu.")
    if actors is None:
        actors = max(1, int(cluster_gpus / gpus)) if gpus else 1
    if cpus is None:
        cpus = max(1.0, float(int(total.get("CPU", 1) // actors))) if not address else 1.0
    return RayOptions(actors=actors, cpus=cpus, gpus=gpus, address=address)


def run_ray(
    items: list[BatchItem],
    options: JobOptions,
    out_root: Path,
    *,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    address: str | None = None,
) -> Iterator[ItemOutcome]:
    """Outcomes as the actors finish them (in no particular order)."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, address)
    try:
        pool = pool_options(actors=actors, cpus=cpus_per_actor, gpus=gpus_per_actor,
                            address=address or os.environ.get("RAY_ADDRESS"), device=options.device)  # fmt: skip
        # No more actors than items: each one loads every model before its first item.
        pool = dataclasses.replace(pool, actors=min(pool.actors, len(items)))
        threads = options.threads or max(1, int(pool.cpus))
        actor_options = dataclasses.replace(options, threads=threads)
        dataset = _dataset(ray, items, actor_options, out_root, pool)
        for row in dataset.iter_rows():
            yield ItemOutcome.from_json(str(row["record"]))
    except (WorkerError, GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # Ray's own errors (a lost node, an actor killed by the OS) as a clear message
        raise ray_error(exc) from exc
    finally:
        if started_here:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BadRequestError("the ray engine needs Ray, which this worker's Python lacks", _INSTALL_FIX) from None
    return ray


def _init(ray: Any, address: str | None) -> None:
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A fresh local Ray; a RAY_ADDRESS left in the environment must not redirect it.
            os.environ.pop("RAY_ADDRESS", None)
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BadRequestError(
            f"cannot connect to the Ray cluster at {address!r} ({exc})" if address else f"cannot start Ray ({exc})",
            "Check the address (`ray status` on the head node shows it), or leave out --address for a local Ray.",
        ) from None


def _dataset(ray: Any, items: list[BatchItem], options: JobOptions, out_root: Path, pool: RayOptions) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI prints one line per item instead
    dataset = ray.data.from_items([item.to_row() for item in items],
                                  override_num_blocks=max(1, min(len(items), MAX_BLOCKS)))  # fmt: skip
    return dataset.map_batches(
        ReconstructActor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=pool.actors, max_tasks_in_flight_per_actor=1),
        fn_constructor_kwargs={"options": options, "out_root": str(out_root.resolve())},
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
        # Read by OpenMP when torch loads in the actor: spinning threads of busy neighbours steal the CPU.
        runtime_env={"env_vars": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}},
    )


def ray_error(exc: BaseException) -> WorkerError:
    """A failure of the pool itself (an actor that could not start, a lost node) as a user-facing error."""
    cause = exc
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[attr-defined]
    if isinstance(cause, WorkerError):
        return cause
    return BadRequestError(
        f"the Ray batch stopped: {type(cause).__name__}: {str(cause)[:400]}",
        "Run again to resume (finished items are kept); see the Ray logs under /tmp/ray for details.",
    )
