"""PyTorch / Hugging Face checkpoints to MLX folders (shipped as ``lacy_mlx.convert``)."""
