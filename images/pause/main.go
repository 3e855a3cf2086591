// pause: the sandbox process of every pod of the local test cluster. It holds the pod's
// namespaces, reaps orphaned children (it is PID 1 when the pod shares its PID namespace)
// and exits cleanly on SIGINT/SIGTERM. Built static (CGO_ENABLED=0), it needs no libc.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
