"""Hydra discovers plugins in the `hydra_plugins` namespace package; ours is `hydra/sweeper=optuna`."""
