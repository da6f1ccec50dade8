"""Shared logic of the pipeline stages: each script under stages/ is a thin entry point."""
