"""fimd: the per-node daemon that serves the fim.v1 watch API, runs a small pool of fimnotify
engines holding the watches, admits watches within its node budgets and writes enriched event
lines to stdout."""
