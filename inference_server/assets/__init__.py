"""Package data: the sample photo and the script that makes it."""
