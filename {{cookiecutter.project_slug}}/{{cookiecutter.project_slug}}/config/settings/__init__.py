"""Settings package: base, local, test and production modules."""
