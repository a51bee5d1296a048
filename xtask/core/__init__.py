"""What training, evaluation and the tools share about the network and how it runs: the model, the
protocol (original or corrected), batches and augmentation, precision and devices, DDP, checkpoint files,
trained weights and the one inference path (``Predictor``). Train, evaluate and inference_time depend on it."""
