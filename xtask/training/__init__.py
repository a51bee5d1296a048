"""How a model is trained: the losses, loss balancing, the training run and its resumable state. The train
stage depends on this folder (with ``common`` and ``core``), nothing else of ``xtask``."""
