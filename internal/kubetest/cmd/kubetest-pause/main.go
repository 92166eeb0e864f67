// Command kubetest-pause is the sandbox ("pause") program of the test
// cluster's pods (internal/kubetest): it holds the pod's namespaces open,
// reaps the zombies it inherits and exits on SIGINT or SIGTERM, as the
// pause image's program does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
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
