"""Optuna sweeps as Hydra multiruns: the sweeper plugin's logic, search spaces, and the trial side of a job."""
