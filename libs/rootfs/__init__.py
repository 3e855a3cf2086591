"""Confined access to a container's root filesystem through procfs and openat2(2)."""
