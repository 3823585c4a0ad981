"""What every app shares: the base errors and the JSON HTTP layer."""
