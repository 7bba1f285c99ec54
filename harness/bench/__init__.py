"""Benchmarks of wmbench's own paths, run as commands (``python -m harness.bench data|speed``, or each module)."""
