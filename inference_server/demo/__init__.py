"""Demo assets: the ICT Face Model Light converted to the FLAME file layout and demo network weights (DEMO data)."""
