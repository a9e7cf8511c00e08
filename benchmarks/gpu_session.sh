#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one go: the CUDA tests, then the reconstruction benchmark on the
# GPU — fast and fidelity presets in fp32 eager against the official recipe on the same GPU, then fp16 / bf16
# with CUDA graphs and torch.compile — and each faster path's meshes against fp32 eager (result_distance.py).
#
# Run from the repository root on a machine with an NVIDIA GPU and the worker's packages:
#     OUT=gpu-out bash benchmarks/gpu_session.sh
# SITE_TARBALL=path.tar.xz unpacks extra packages first (a machine that cannot reach a package index:
# MediaPipe, NumPy 1.26, protobuf 4 and the MTCNN weights built here for its Python; the CUDA tests run without
# them, since that protobuf is too old for the onnx package there). Every step has its own
# time limit and a failed step does not stop the rest; $OUT gets one log and one JSON report.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu BENCH_EXTRA=--quick: a dry run of the flow on a machine without a GPU
BENCH_EXTRA=${BENCH_EXTRA:-}
export PYTHONUNBUFFERED=1 OFER_CACHE_DIR=${OFER_CACHE_DIR:-/tmp/ofer-gpu-cache}
RUNS=$(mktemp -d)
SAVED=$(mktemp -d)

if [ -n "${SITE_TARBALL:-}" ]; then
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp/site')" "$SITE_TARBALL"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, report its exit status and time
    local name=$1 limit=$2 start
    shift 2
    start=$(date +%s)
    echo "=== $name (limit ${limit}s)" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc in $(( $(date +%s) - start ))s" | tee -a "$LOG"
    return $rc
}

read -r -d '' ENV_CHECK <<'EOF'
import importlib, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
for name in ("numpy", "cv2", "mediapipe", "google.protobuf", "onnxruntime", "safetensors", "PIL"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:  # a report, not a failure: later steps say what they miss
        print(name, "NOT IMPORTABLE:", type(exc).__name__, exc)
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers())
import mediapipe as mp
mp.solutions.face_mesh.FaceMesh(static_image_mode=True).close()
print("mediapipe face mesh: ok")
EOF

bench() {  # bench NAME SECONDS ARGS...: one benchmarks/reconstruction.py run, its report and its distance
    local name=$1 limit=$2 preset=${1%%_*}
    shift 2
    step "$name" "$limit" "$PY" benchmarks/reconstruction.py --device "$DEVICE" --no-worker --no-blender \
        --json "$RUNS/$name.json" --save-result "$SAVED/$name.npz" $BENCH_EXTRA "$@"
    # The reference: this preset's first run (fp32; CUDA graphs replay the eager kernels, so fp32 either way).
    local reference
    reference=$(ls -tr "$SAVED"/"$preset"_*.npz 2>/dev/null | head -1)
    if [ -f "$SAVED/$name.npz" ] && [ -n "$reference" ] && [ "$reference" != "$SAVED/$name.npz" ]; then
        step "distance_$name" 60 "$PY" benchmarks/result_distance.py "$reference" "$SAVED/$name.npz"
    fi
    summarise
}

summarise() {  # the runs so far into $OUT/gpu_report.json and one line each (the session may be cut off)
    "$PY" - "$RUNS" "$OUT/gpu_report.json" >"$OUT/gpu_summary.txt" <<'EOF'
import json, sys
from pathlib import Path
runs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json"))}
Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
for name, run in runs.items():
    ours, base = run.get("ours", {}), run.get("baseline") or {}
    line = f"{name}: ours {ours.get('total', float('nan')):.3f} s"
    if base.get("total"):
        line += f", official recipe {base['total']:.3f} s, x{base['total'] / ours['total']:.1f}"
    stages = {k: round(v, 3) for k, v in ours.items() if k != "total"}
    print(line, stages, "| memory MB", run.get("memory_mb"))
EOF
}

# Most important first: a cut-off session keeps what ran. The bundle replays CUDA graphs by default on a GPU;
# *_eager runs turn that off (OFER_CUDA_GRAPHS=0); *_whole runs replay whole sampler steps, update and noise
# included (OFER_CUDA_WHOLE_STEPS=1, not yet the default: these runs and the CUDA tests decide). PLAN=short: the
# CUDA tests, then the default (graphs) in fp32 with the official recipe once, whole steps, fp16 / bf16 (about 3
# minutes on an H200).
CUDA_TESTS="tests/inference_server/test_model_bundle.py tests/inference_server/test_backends.py
    tests/inference_server/diffusion/test_whole_step.py"
if [ "${PLAN:-full}" = short ]; then
    step cuda_tests 45 env PYTHONPATH="$PWD" "$PY" -m pytest -q -p no:cacheprovider $CUDA_TESTS -rs
    bench fast_fp32 60 --preset fast --repeats 3 --no-baseline
    bench fidelity_fp32 60 --preset fidelity --repeats 2
    bench fidelity_whole 35 --preset fidelity --repeats 2 --cuda-whole-steps --no-baseline
    bench fast_whole 35 --preset fast --repeats 3 --cuda-whole-steps --no-baseline
    bench fidelity_fp16 35 --preset fidelity --repeats 2 --precision fp16 --no-baseline
    bench fast_fp16 35 --preset fast --repeats 3 --precision fp16 --no-baseline
    bench fidelity_bf16 35 --preset fidelity --repeats 2 --precision bf16 --no-baseline
else
    step env 60 "$PY" -c "$ENV_CHECK"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$LOG" 2>&1
    step cuda_tests 90 env PYTHONPATH="$PWD" "$PY" -m pytest -q -p no:cacheprovider $CUDA_TESTS -rs
    bench fast_fp32 120 --preset fast --repeats 5
    bench fidelity_fp32 120 --preset fidelity --repeats 3
    bench fidelity_whole 60 --preset fidelity --repeats 3 --cuda-whole-steps --no-baseline
    bench fast_whole 60 --preset fast --repeats 5 --cuda-whole-steps --no-baseline
    bench fidelity_whole_fp16 60 --preset fidelity --repeats 3 --cuda-whole-steps --precision fp16 --no-baseline
    bench fast_fp16 60 --preset fast --repeats 5 --precision fp16 --no-baseline
    bench fidelity_fp16 60 --preset fidelity --repeats 3 --precision fp16 --no-baseline
    bench fidelity_bf16 60 --preset fidelity --repeats 3 --precision bf16 --no-baseline
    bench fast_eager 90 --preset fast --repeats 3 --no-cuda-graphs --no-baseline
    bench fidelity_eager 150 --preset fidelity --repeats 1 --no-cuda-graphs --no-baseline
    bench fidelity_compile 150 --preset fidelity --repeats 3 --compile --no-baseline
fi
cat "$OUT/gpu_summary.txt"
grep -E "^=== |^\{\"file\"" "$LOG"
rm -rf "$RUNS" "$SAVED"
