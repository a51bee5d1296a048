"""Raw data -> the prepared copy: the Cityscapes and NYUv2 readers, the synthetic generator, prepare."""
