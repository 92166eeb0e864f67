package kubetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The cluster has no pod network. containerd gives each pod a network
// namespace of its own holding only lo, and the CNI plugin
// (cmd/kubetest-cni, which asks this file's server) gives it an address of
// the loopback range, 127.77.X.Y: an address that is local in every
// network namespace, the host's included, so nothing routes it anywhere
// and no address of a private range is used. The test binary relays TCP
// so that the address serves what a pod network would:
//
//   - host → pod: for each port the pod's containers declare
//     (containerPort), while something listens on it inside the pod, the
//     test binary listens on the pod's address in the host's namespace and
//     connects each connection to 127.0.0.1:port inside the pod. The
//     listener follows the port's state within podPortPoll, so the
//     kubelet's HTTP and TCP probes see a refused connection when the
//     container does not listen, as on a pod network; tests reach a pod at
//     its IP.
//   - pod → host: for each port given to ExposeHostPort, it listens on
//     127.0.0.1:port inside every pod started afterwards and connects to
//     127.0.0.1:port on the host: how pods reach the S3 gateway a test runs.
//
// Pods do not reach each other, and there are no Services (no kube-proxy,
// no cluster DNS).

// podPortPoll is how often the listening ports inside a pod are read.
const podPortPoll = 300 * time.Millisecond

// podNet is one pod sandbox's network.
type podNet struct {
	id        string // the sandbox (container) id
	namespace string
	name      string
	addr      netip.Addr
	netns     *os.File
	ports     []int // the containers' declared TCP ports

	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	listeners []net.Listener // pod → host
	hostSide  map[int]net.Listener
	conns     map[net.Conn]bool // relayed connections, both ends
	closed    bool
	relays    sync.WaitGroup // the relays' goroutines
}

// cniServer answers kubetest-cni.
type cniServer struct {
	c  *Cluster
	ln net.Listener

	mu        sync.Mutex
	pods      map[string]*podNet
	used      map[netip.Addr]bool
	hostPorts map[int]int // exposed host port → number of exposures
	wg        sync.WaitGroup
}

type cniRequest struct {
	Env   map[string]string `json:"env"`
	Stdin []byte            `json:"stdin"`
}

type cniResponse struct {
	Stdout []byte `json:"stdout"`
	Code   int    `json:"code"`
}

func newCNIServer(c *Cluster, socket string) (*cniServer, error) {
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	s := &cniServer{c: c, ln: ln, pods: map[string]*podNet{}, used: map[netip.Addr]bool{}, hostPorts: map[int]int{}}
	s.wg.Go(s.serve)
	return s, nil
}

func (s *cniServer) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer conn.Close()
			var req cniRequest
			if err := json.NewDecoder(conn).Decode(&req); err != nil {
				return
			}
			resp := s.handle(req)
			_ = json.NewEncoder(conn).Encode(resp)
		})
	}
}

// close stops the server and every relay.
func (s *cniServer) close() {
	s.ln.Close()
	s.mu.Lock()
	pods := make([]*podNet, 0, len(s.pods))
	for _, p := range s.pods {
		pods = append(pods, p)
	}
	s.pods = map[string]*podNet{}
	s.mu.Unlock()
	for _, p := range pods {
		p.close()
	}
	s.wg.Wait()
}

func cniError(version string, err error) cniResponse {
	b, _ := json.Marshal(map[string]any{"cniVersion": version, "code": 999, "msg": err.Error()})
	return cniResponse{Stdout: b, Code: 1}
}

func (s *cniServer) handle(req cniRequest) cniResponse {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(req.Stdin, &conf)
	id := req.Env["CNI_CONTAINERID"]
	switch req.Env["CNI_COMMAND"] {
	case "ADD":
		p, err := s.add(id, req.Env)
		if err != nil {
			s.c.logf("cni: ADD %s: %v", id, err)
			return cniError(conf.CNIVersion, err)
		}
		ip := map[string]any{"address": p.addr.String() + "/32", "interface": 0}
		if conf.CNIVersion != "" && conf.CNIVersion < "1.0.0" {
			ip["version"] = "4"
		}
		b, err := json.Marshal(map[string]any{
			"cniVersion": conf.CNIVersion,
			"interfaces": []map[string]string{{"name": req.Env["CNI_IFNAME"], "sandbox": req.Env["CNI_NETNS"]}},
			"ips":        []any{ip},
		})
		if err != nil {
			return cniError(conf.CNIVersion, err)
		}
		return cniResponse{Stdout: b}
	case "DEL":
		s.mu.Lock()
		p := s.pods[id]
		delete(s.pods, id)
		if p != nil {
			delete(s.used, p.addr)
		}
		s.mu.Unlock()
		if p != nil {
			p.close()
		}
		return cniResponse{}
	default:
		return cniResponse{}
	}
}

// cniArgs parses CNI_ARGS ("K8S_POD_NAMESPACE=db;K8S_POD_NAME=…").
func cniArgs(s string) map[string]string {
	out := map[string]string{}
	for kv := range strings.SplitSeq(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

func (s *cniServer) add(id string, env map[string]string) (*podNet, error) {
	s.mu.Lock()
	if p := s.pods[id]; p != nil {
		s.mu.Unlock()
		return p, nil
	}
	addr, err := s.allocate()
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	var hostPorts []int
	for port := range s.hostPorts {
		hostPorts = append(hostPorts, port)
	}
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		delete(s.used, addr)
		s.mu.Unlock()
	}

	args := cniArgs(env["CNI_ARGS"])
	p := &podNet{id: id, namespace: args["K8S_POD_NAMESPACE"], name: args["K8S_POD_NAME"], addr: addr,
		hostSide: map[int]net.Listener{}, conns: map[net.Conn]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := s.c.client.CoreV1().Pods(p.namespace).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		release()
		return nil, fmt.Errorf("read pod %s/%s: %w", p.namespace, p.name, err)
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
					p.ports = append(p.ports, int(cp.ContainerPort))
				}
			}
		}
	}
	if p.netns, err = os.Open(env["CNI_NETNS"]); err != nil {
		release()
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	for _, port := range hostPorts {
		var ln net.Listener
		err := inNetns(p.netns, func() (err error) {
			ln, err = net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			return err
		})
		if err != nil {
			p.close()
			release()
			return nil, fmt.Errorf("expose host port %d in pod %s/%s: %w", port, p.namespace, p.name, err)
		}
		p.listeners = append(p.listeners, ln)
		p.relays.Go(func() {
			p.relay(ln, func() (net.Conn, error) { return net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second) })
		})
	}
	var pctx context.Context
	pctx, p.cancel = context.WithCancel(context.Background())
	p.done = make(chan struct{})
	go p.followPorts(pctx)

	s.mu.Lock()
	s.pods[id] = p
	s.mu.Unlock()
	s.c.logf("cni: pod %s/%s: %s, ports %v", p.namespace, p.name, p.addr, p.ports)
	return p, nil
}

// allocate returns a free address of 127.77.0.0/16; s.mu is held.
func (s *cniServer) allocate() (netip.Addr, error) {
	for i := 2; i < 1<<16-1; i++ {
		a := netip.AddrFrom4([4]byte{127, 77, byte(i >> 8), byte(i)})
		if i&0xff == 0 || i&0xff == 0xff || s.used[a] {
			continue
		}
		s.used[a] = true
		return a, nil
	}
	return netip.Addr{}, errors.New("no free pod address in 127.77.0.0/16")
}

// followPorts keeps a host-side listener on the pod's address for each
// declared port exactly while the pod listens on it, until ctx ends; close
// waits for it (p.done).
func (p *podNet) followPorts(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(podPortPoll)
	defer t.Stop()
	for {
		listening, err := p.listening()
		if err == nil {
			p.mu.Lock()
			for _, port := range p.ports {
				ln, open := p.hostSide[port]
				switch {
				case listening[port] && !open:
					addr := net.JoinHostPort(p.addr.String(), strconv.Itoa(port))
					ln, err := net.Listen("tcp4", addr)
					if err != nil {
						continue
					}
					p.hostSide[port] = ln
					p.relays.Go(func() {
						p.relay(ln, func() (net.Conn, error) {
							return p.dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
						})
					})
				case !listening[port] && open:
					ln.Close()
					delete(p.hostSide, port)
				}
			}
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// listening returns the TCP ports something listens on inside the pod,
// on every address or on 127.0.0.1.
func (p *podNet) listening() (map[int]bool, error) {
	out := map[int]bool{}
	err := inNetns(p.netns, func() error {
		for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			for line := range strings.Lines(string(b)) {
				fields := strings.Fields(line)
				// sl local_address rem_address st …; st 0A is LISTEN.
				if len(fields) < 4 || fields[3] != "0A" {
					continue
				}
				host, portHex, ok := strings.Cut(fields[1], ":")
				if !ok {
					continue
				}
				port, err := strconv.ParseUint(portHex, 16, 16)
				if err != nil {
					continue
				}
				switch host {
				case "00000000", "0100007F", // 0.0.0.0, 127.0.0.1
					"00000000000000000000000000000000": // ::
					out[int(port)] = true
				}
			}
		}
		return nil
	})
	return out, err
}

// dial connects to addr inside the pod's network namespace.
func (p *podNet) dial(addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(p.netns, func() (err error) {
		conn, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	})
	return conn, err
}

// close stops the pod's relays: its listeners and the connections they
// relay, and waits for their goroutines.
func (p *podNet) close() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	p.mu.Lock()
	p.closed = true
	for _, ln := range p.listeners {
		ln.Close()
	}
	for _, ln := range p.hostSide {
		ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.listeners, p.hostSide = nil, map[int]net.Listener{}
	p.mu.Unlock()
	p.relays.Wait()
	if p.netns != nil {
		p.netns.Close()
	}
}

// track records a relayed connection so close can end it; false when the
// pod is closed already (the connection is closed then).
func (p *podNet) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *podNet) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// relay accepts on ln until it is closed and relays each connection to
// one from dial.
func (p *podNet) relay(ln net.Listener, dial func() (net.Conn, error)) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		p.relays.Go(func() {
			defer p.untrack(in)
			out, err := dial()
			if err != nil {
				if tc, ok := in.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // a reset, like a refused connection
				}
				in.Close()
				return
			}
			if !p.track(out) {
				in.Close()
				return
			}
			defer p.untrack(out)
			pipe(in, out)
		})
	}
}

// pipe copies both ways until both directions end.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Go(func() { half(a, b) })
	wg.Go(func() { half(b, a) })
	wg.Wait()
	a.Close()
	b.Close()
}

// inNetns runs f on a thread in the network namespace ns: the sockets f
// creates belong to ns for good. A thread that cannot go back stays locked
// and is discarded with its goroutine.
func inNetns(ns *os.File, f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// exposeHostPort makes 127.0.0.1:port on the host reachable at the same
// address inside the pods started from now on, until undone.
func (s *cniServer) exposeHostPort(port int) func() {
	s.mu.Lock()
	s.hostPorts[port]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.hostPorts[port]--; s.hostPorts[port] <= 0 {
			delete(s.hostPorts, port)
		}
		s.mu.Unlock()
	}
}
