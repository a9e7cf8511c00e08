"""The benchmarks' networks and measuring helpers: official-size (or tiny) random networks written once as
model files, the bundle built from them with the DEMO head, and peak-memory / device-sync helpers.

Used by ``reconstruction.py`` and the encoder / denoiser benchmarks (``from bench_setup import FULL, load_bundle``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from inference_server.checkpoints import LoadedNetworks, load_networks, save_project_checkpoint
from inference_server.model_bundle import ModelBundle
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser, DenoiserConfig
from inference_server.nets.idrank import IdRank, IdRankConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"


@dataclass(frozen=True)
class Sizes:
    arcface: ArcFaceConfig
    clip: ClipVisionConfig
    idrank: IdRankConfig
    idgen: DenoiserConfig
    expgen: DenoiserConfig


FULL = Sizes(ArcFaceConfig(), ClipVisionConfig(), IdRankConfig(), IDGEN_CONFIG, EXPGEN_CONFIG)
TINY = Sizes(
    ArcFaceConfig(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8)),
    ClipVisionConfig(width=32, layers=1, heads=1, patch_size=56),
    IdRankConfig(hidden_dims=(16, 16, 8, 8)),
    DenoiserConfig(feature_dim=300, dims=(300, 16, 8), context_dim=512, time_dim=16, n_tokens=2, heads=1, head_dim=8),
    DenoiserConfig(feature_dim=53, dims=(53, 16, 8), context_dim=1024, time_dim=16, n_tokens=2, heads=1, head_dim=8),
)  # fmt: skip


# -- memory -------------------------------------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- networks ---------------------------------------------------------------------------------------
def build_networks(sizes: Sizes, seed: int = 0) -> dict[str, LoadedNetworks]:
    """Random networks of the given sizes, in the layout the loaders return."""
    torch.manual_seed(seed)
    meta = {"demo": True, "provenance": {"benchmark": "random weights, official sizes"}}
    nets = {
        "idgen": LoadedNetworks("idgen", ArcFaceEncoder(sizes.arcface), denoiser=Denoiser(sizes.idgen),
                                metadata=dict(meta)),
        "expgen": LoadedNetworks("expgen", ArcFaceEncoder(sizes.arcface), denoiser=Denoiser(sizes.expgen),
                                 farl=ClipImageEncoder(sizes.clip), metadata=dict(meta)),
        "idrank": LoadedNetworks("idrank", ArcFaceEncoder(sizes.arcface), farl=ClipImageEncoder(sizes.clip),
                                 rank_net=IdRank(sizes.idrank), metadata=dict(meta)),
    }  # fmt: skip
    # Random denoisers amplify noise over 1000 steps; scaling the output layer keeps the samples in a
    # plausible coefficient range (the cost of the arithmetic does not depend on the values).
    with torch.no_grad():
        for kind in ("idgen", "expgen"):
            denoiser = nets[kind].denoiser
            assert denoiser is not None
            out_conv = denoiser.finals[0][2]  # type: ignore[index]
            out_conv.weight.mul_(0.05)
    return {kind: n.eval() for kind, n in nets.items()}


def model_files(sizes: Sizes, folder: Path) -> dict[str, Path]:
    """The benchmark's model files (written once): loading them is the cold 'load' cost."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{kind}.safetensors" for kind in ("idgen", "expgen", "idrank")}
    if not all(p.is_file() and p.with_suffix(".json").is_file() for p in paths.values()):
        for kind, networks in build_networks(sizes).items():
            save_project_checkpoint(paths[kind], networks)
    return paths


def load_bundle(
    files: dict[str, Path], precision: str, *, identical_encoders: bool = False, share_encoders: bool = True
) -> ModelBundle:
    """A bundle with the benchmark's networks and the DEMO FLAME head (no DEMO weights needed).

    ``identical_encoders``: every ArcFace copy takes IdGen's weights and IdRank's FaRL takes ExpGen's, as in
    checkpoints whose encoders were frozen or handed over; ``share_encoders`` is the bundle's option."""
    from inference_server.demo.assets import ensure_demo_assets
    from inference_server.flame.loading import load_flame_model
    from inference_server.model_bundle import load_front_indices

    head = ensure_demo_assets()
    flame = load_flame_model(head.model_pkl, landmark_embedding=head.landmark_embedding)
    front = load_front_indices(head.front_face_indices, flame.n_vertices, official=False)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    nets = {kind: load_networks(path) for kind, path in files.items()}
    if identical_encoders:
        for kind in ("expgen", "idrank"):
            nets[kind].arcface.load_state_dict(nets["idgen"].arcface.state_dict())
        farl, twin = nets["expgen"].farl, nets["idrank"].farl
        assert farl is not None and twin is not None
        twin.load_state_dict(farl.state_dict())
    sources = {"flame": str(head.model_pkl)} | {k: str(p) for k, p in files.items()}
    return ModelBundle(nets["idgen"], nets["expgen"], nets["idrank"], flame, front, True, sources, dtype,
                       share_encoders=share_encoders)  # fmt: skip
