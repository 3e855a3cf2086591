"""Client-side tools of fim-k8s (peers of the services: they use libs, never services)."""
