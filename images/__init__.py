"""Container images of fim-k8s, built without a Docker engine and without a registry."""
