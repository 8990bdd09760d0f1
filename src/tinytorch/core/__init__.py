"""The core layers of tinytorch: tensors, kernels, tokenizers and embedding layers."""
