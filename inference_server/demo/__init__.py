"""Demo assets: a generated stand-in head in the FLAME file layout and demo network weights (DEMO data)."""
