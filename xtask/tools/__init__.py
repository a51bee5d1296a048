"""Commands beside the pipeline (bench, predict, inference time, metric checks, parity): no
training or evaluation result depends on them."""
