"""A clip (video or folder of frames) → one animation: the sequence stages (docs/sequence-result.md).

``source`` (frames, streamed), ``frames`` (per-frame passes), ``clip_identity`` (one identity and camera),
``path`` (the temporal path), ``controls`` (FLAME's bases and the rig's meshes), ``assemble``, ``workdir``
(resume), ``run`` (the composition). Importing this package imports nothing heavy; ``run`` imports torch.
"""
