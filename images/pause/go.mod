module fim-k8s.local/pause

go 1.26.0
