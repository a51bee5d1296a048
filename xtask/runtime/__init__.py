"""Where and how a stage runs (docker, torchrun): never what it computes, so no stage depends on it."""
