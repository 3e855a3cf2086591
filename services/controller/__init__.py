"""fim-k8s controller: keeps every node's fimd watching exactly what the FimWatchers ask for.

Shape (sample-controller style): informers list+watch FimWatchers, Pods and fimd pods into
local caches (`informer`), changes enqueue typed keys (`keys`) on a deduplicating,
rate-limited work queue (`workqueue`), and level-triggered `sync(key)` handlers
(`controller`) return a Result; they compute actions with the pure functions of `desired`,
`reconcile` and `status` over the per-node bookkeeping of `state`, and carry them out,
fenced by the leader lease (`leader`), through thin adapters: the Kubernetes REST API
(`kube`), the fimd gRPC API (`fimd_client`), Events (`events`).
"""
