"""Benchmarks that measure the project's safety costs against plain Celery in the same run."""
