"""Demo tasks: one small real task per worker pool."""
