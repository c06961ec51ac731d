"""vbm's on-demand performance benchmark (not part of the test suite): `python -m bench`.

See docs/performance.md for what it measures, how, and the latest results.
"""
