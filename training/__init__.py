"""Training orchestration: the run's stages, the loop and its callbacks, evaluation, cross-validation, the config
loader. Stands on every other package (utils, dataloader, factory, inference); nothing but the entry scripts and
benchmarks imports it, and the Kaggle package does not ship it."""
