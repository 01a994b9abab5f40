"""The measurements behind benchmarks/run_all.py: what each section measures and how it is reported."""
