package snapshot

import (
	"bufio"
	"context"
	"net"

	"github.com/go-sql-driver/mysql"
)

// readBufferSize is how much a dumping connection reads from its socket
// at once. The driver reads 4 KiB at a time, a system call for every
// twenty-odd rows of a typical table.
const readBufferSize = 128 << 10

// withReadBuffer sets cfg to dial connections that read their socket
// through a readBufferSize buffer, over cfg's own dial function if it
// has one. TLS, when configured, runs on top of it.
func withReadBuffer(cfg *mysql.Config) {
	dial := cfg.DialFunc
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}, nil
	}
}

// bufferedConn is a connection whose reads go through a buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
