"""Placeholder until the model lands."""


def hello() -> str:
    return "hi"
