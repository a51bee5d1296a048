"""The DVC stage entry points (python -m pipeline.<stage>) and the tools beside them, thin over xtask."""
