"""fimd: the per-node daemon that serves the fim.v1 watch API, supervises fimnotify processes
and writes enriched event lines to stdout."""
