"""Make compressed-tensors checkpoint variants of a BF16 MoE checkpoint."""
