"""What turns a trained model into scores: the metric families, the evaluate stage's pass over the
validation set and its examples, the inference-time measurement. The evaluate and inference_time stages
depend on it (with ``common`` and ``core``)."""
