"""Sample-quality metrics over uint8 NHWC image arrays, each one pure NumPy and seeded.

- `swd`: sliced Wasserstein distance on Laplacian pyramids (ProGAN), the main quality figure.
- `msssim`: MS-SSIM between random pairs, a diversity check that catches mode collapse.
- `memorisation`: nearest-training-image distances, a check that the model does not copy.
- `inception`: FID and KID, only from Inception weights the user already has on disk.

`components.evaluator` combines them against a fixed real set; these modules know nothing of
models, files or the pipeline.
"""
