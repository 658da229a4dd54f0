"""Model architectures and loading. Importing this package registers the CIFAR models with timm."""
