"""The tamper-evident line stream: keys, the sealer fimd uses, the verifier (stdlib only)."""
