"""Factories building models, losses, optimizers and schedulers from names (see each module's registry)."""
