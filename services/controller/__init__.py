"""fim-k8s controller: keeps every node's fimd watching exactly what the FimWatchers ask for.

Shape (sample-controller style): informers list+watch FimWatchers, Pods and fimd pods into
local caches (`informer`), changes enqueue keys on a deduplicating, rate-limited work queue
(`workqueue`), and level-triggered sync handlers (`controller`) compute actions with the pure
functions of `reconcile` and `status` and carry them out through thin adapters: the
Kubernetes REST API (`kube`), the fimd gRPC API (`fimd`), Events (`events`).
"""
