"""`kubectl fim`: a kubectl plugin for fim-k8s (README.md, *kubectl fim*).

Standard library only, so that Bazel can pack it with the libs it uses into one zipapp
(`//plugins/kubectl_fim:kubectl-fim`). It talks to the cluster by running `kubectl` itself,
so every kubeconfig authentication method works exactly as it does for kubectl.

Modules: `cli` (arguments, commands), `kubectl` (running kubectl), `follow` (following
fimd's logs on every node), `merge` (interleaving the nodes' lines in time order),
`filters` (which lines to show), `render` (compact and JSON output), `status` (the status
tables).
"""
