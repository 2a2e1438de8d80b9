"""slm-deploy: one spec for serving small language models on AKS, Kubernetes and edge boxes."""

__version__ = "0.1.0"
