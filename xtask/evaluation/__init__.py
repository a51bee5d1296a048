"""What turns a trained model into scores: the metric families, evaluation of either checkpoint
format, the qualitative figure. The evaluate stage depends on it (with ``training`` and ``common``)."""
