"""Photo loading, face detection and alignment, and the ArcFace / FaRL crops."""
