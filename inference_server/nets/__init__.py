"""OFER networks: the diffusion denoiser (IdGen / ExpGen), IdRank and the two image encoders."""
