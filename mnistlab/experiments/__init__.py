"""Experiments: finished runs (runs), what to train or reuse (plan), compare and its worker
processes (parallel), the comparison table (table), and evaluating a checkpoint (evaluate)."""
