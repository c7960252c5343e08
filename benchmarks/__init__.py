"""Benchmarks of the study's costs against what a user would otherwise use: `python -m benchmarks.run`."""
