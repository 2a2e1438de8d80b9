"""Kubernetes components: namespace, GPU drivers, model servers, gateway, autoscaling, monitoring."""
