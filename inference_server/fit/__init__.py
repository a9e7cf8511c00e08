"""Head pose and pinhole camera from the photo's landmarks; expressions scored by what is visible."""
