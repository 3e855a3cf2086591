"""mTLS certificates of fim-k8s: a private CA and the fimd server / controller client certs."""
