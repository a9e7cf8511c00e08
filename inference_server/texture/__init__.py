"""The photo projected into the head's UV map: visibility, occluder mask, fill, PNG."""
