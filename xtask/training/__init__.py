"""Everything that decides a trained model: the network, the losses, loss balancing, the protocol
(original or corrected), batches and augmentation, precision and devices, DDP, the training loop and
its resumable state. The train stage depends on this folder (and ``common``), nothing else of ``xtask``."""
