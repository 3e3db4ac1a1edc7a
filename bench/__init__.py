"""Benchmarks of the speech gateway; ``python -m bench`` runs the whole suite (see bench/README.md)."""
