"""Metrics. In keras.ops, run inside the compiled forward pass: of the attention (`attention`) and of
the block outputs (`representations`). In numpy, on what the pass stored: linear CKA (`cka`), the
high-norm threshold (`token_norms`), PCA feature maps (`pca`), and of the parameters (`parameters`).
`grid` and `arrays` are what they share."""
