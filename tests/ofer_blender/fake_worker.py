"""A stand-in worker speaking the JSON Lines protocol, for the add-on's client tests (no torch).

Usage: ``python fake_worker.py MODE`` with MODE one of
  normal   progress events, then a real result file (tests/blender/result_factory.py) and ``result``;
           the request's ``box``/``points``/sampler arguments are echoed into the result's meta_json
  crash    a progress event, a message on stderr, then exit 1 mid-run
  hang     answers ``hello`` but never answers ``reconstruct``
  garbage  prints a non-protocol line on stdout when asked to reconstruct
  slow     progress events every 0.05 s for a long time; honours ``cancel`` between steps
  deaf     like slow but ignores ``cancel`` (the client must terminate it)
  error    answers ``reconstruct`` with an ``error`` event (code no_face)
"""

from __future__ import annotations

import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blender"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's worker, not an installed one

from inference_server import protocol


def send(message: dict) -> None:
    sys.stdout.write(protocol.encode(message) + "\n")
    sys.stdout.flush()


def read_request(timeout: float | None) -> protocol.Request | None:
    if timeout is not None:
        ready, _, _ = select.select([sys.stdin], [], [], timeout)
        if not ready:
            return None
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return protocol.parse_request(line)


def reconstruct(mode: str, request: protocol.Request) -> None:
    args = protocol.parse_reconstruct_args(request)
    rid = request.id
    if mode == "hang":
        while True:
            time.sleep(1)
    if mode == "garbage":
        print("Loading weights... this line is not JSON", flush=True)
        time.sleep(30)
        return
    if mode == "error":
        send(protocol.error_event(rid, "no_face", "No face was found in the photo", "Mark the face on the photo"))
        return
    send(protocol.progress_event(rid, "load", 1, 1, "loading"))
    if mode == "crash":
        print("fake worker: simulated crash in sample_shapes", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode in ("slow", "deaf"):
        for step in range(100000):
            send(protocol.progress_event(rid, "sample_shapes", step, 100000))
            incoming = read_request(0.05)
            if incoming is not None and incoming.op == "cancel" and mode == "slow":
                send({"id": rid, "event": "cancelled"})
                return
    for stage in ("detect", "encode", "sample_shapes", "rank", "sample_expressions", "decode", "write"):
        send(protocol.progress_event(rid, stage, 1, 1))
    from result_factory import make_result_file

    echo = {
        "request": {
            "image": args.image,
            "photos": list(args.photos),
            "box": list(args.box) if args.box else None,
            "points": [list(p) for p in args.points] if args.points else None,
            "sampler": args.sampler,
            "steps": args.steps,
            "seed": args.seed,
            "n_shapes": args.n_shapes,
            "n_expressions": args.n_expressions,
            "top_k": args.top_k,
            "device": args.device,
            "extra": args.extra,
        }
    }
    n_id = min(args.top_k, 4)
    n_exp = min(args.n_expressions, 4)
    path = make_result_file(
        args.output,
        n_identities=n_id,
        n_expressions=n_exp,
        seed=args.seed,
        meta_extra=echo,
        backend="synthetic",
        flame_controls=bool(args.extra.get("flame_controls")),  # the DEMO FLAME head with its bases (torch)
    )
    send({"id": rid, "event": "result", "path": str(path), "summary": {"demo": True, "identities": n_id}})


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "normal"
    print(f"fake worker started in mode {mode}", file=sys.stderr, flush=True)
    while True:
        try:
            request = read_request(None)
        except protocol.ProtocolError as exc:
            send(protocol.error_event(exc.request_id or "", "bad_request", str(exc), "send valid JSON"))
            continue
        assert request is not None
        if request.op == "hello":
            send(
                {
                    "id": request.id,
                    "event": "hello",
                    "protocol": 1,
                    "worker_version": "fake",
                    "python": sys.version,
                    "torch": None,
                    "device": "cpu",
                    "devices": ["cpu"],
                    "assets": {},
                    "demo": True,
                    "mode": mode,
                }
            )
        elif request.op == "shutdown":
            return 0
        elif request.op == "cancel":
            continue
        elif request.op == "reconstruct":
            reconstruct(mode, request)
    return 0


if __name__ == "__main__":
    sys.exit(main())
