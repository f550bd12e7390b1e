"""Overhead benchmarks: our policies side by side with the peers, in one run."""
