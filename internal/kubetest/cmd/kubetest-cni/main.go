// Command kubetest-cni is the CNI plugin of the test cluster
// (internal/kubetest). It does no networking itself: it hands the request
// (the CNI_* environment and the network configuration on stdin) to the
// test binary over the unix socket the configuration names, and prints
// the answer. The test binary gives each pod a loopback address and relays
// the pod's ports; see internal/kubetest/cni.go.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// request and response are the messages on the socket, one each way.
type request struct {
	Env   map[string]string `json:"env"`
	Stdin []byte            `json:"stdin"`
}

type response struct {
	Stdout []byte `json:"stdout"`
	Code   int    `json:"code"`
}

func main() {
	os.Exit(run())
}

func run() int {
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fail(fmt.Errorf("read stdin: %w", err))
	}
	if os.Getenv("CNI_COMMAND") == "VERSION" {
		fmt.Print(`{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}`)
		return 0
	}
	var conf struct {
		Socket string `json:"socket"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil || conf.Socket == "" {
		return fail(fmt.Errorf("network configuration without a socket: %v", err))
	}
	req := request{Env: map[string]string{}, Stdin: stdin}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CNI_") {
			req.Env[k] = v
		}
	}
	conn, err := net.DialTimeout("unix", conf.Socket, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fail(err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return fail(fmt.Errorf("read the answer: %w", err))
	}
	os.Stdout.Write(resp.Stdout)
	return resp.Code
}

// fail prints a CNI error result.
func fail(err error) int {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "code": 999, "msg": "kubetest-cni: " + err.Error()})
	os.Stdout.Write(b)
	return 1
}
