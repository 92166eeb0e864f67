package testbed

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestProxyHoldsBytesWhileCut: a cut path delivers nothing, in either
// direction, and a heal delivers what was held, in order.
func TestProxyHoldsBytesWhileCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte("echo " + line))
				}
			}()
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string, timeout time.Duration) (string, error) {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		return r.ReadString('\n')
	}
	if got, err := roundTrip("one", 5*time.Second); err != nil || got != "echo one\n" {
		t.Fatalf("healed path: %q, %v", got, err)
	}
	p.Cut()
	if got, err := roundTrip("two", 300*time.Millisecond); err == nil {
		t.Fatalf("cut path answered %q", got)
	}
	p.Heal()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "echo two\n" {
		t.Fatalf("after heal: %q, %v; want the held request answered", got, err)
	}
}
