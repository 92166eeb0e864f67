package binlog

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// The replication protocol's commands and markers this file speaks.
const (
	comRegisterReplica = 0x15
	comBinlogDump      = 0x12
	// semiSyncIndicator opens the two-byte header the server puts before
	// every event of a semi-synchronous replica's stream; the second byte is
	// 1 when the server waits for the replica to acknowledge that event.
	semiSyncIndicator = 0xef
	// replicaHost is the host name the replica registers with; the
	// server shows it in SHOW REPLICAS.
	replicaHost = "mysql-pitr"
)

// dumpOptions are a replication connection's settings.
type dumpOptions struct {
	flavor    Flavor
	serverID  uint32
	heartbeat time.Duration
	// semiSync asks the server to treat the connection as a
	// semi-synchronous replica: it then marks the events it waits on (see
	// dumpConn.next) until dumpConn.ack acknowledges them.
	semiSync bool
	// tls, when set, encrypts the connection; dial opens it.
	tls  *tls.Config
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// dumpConn is one replication connection: registered with the server as a
// replica and reading the binlog dump from a position, as a server's own
// replica does. It hands on every event's bytes exactly as the server sent
// them. Its reads and its acknowledgements may come from two goroutines.
type dumpConn struct {
	c        *client.Conn
	semiSync bool
	ackMu    sync.Mutex
}

// dialDump connects to the source server, registers as a replica and asks
// for the binlog from position from.
func (s *Source) dialDump(ctx context.Context, o dumpOptions, from catalog.Position) (*dumpConn, error) {
	if from.Pos > 1<<32-1 {
		return nil, fmt.Errorf("position %s is past what the replication protocol can ask for (4 GiB into a file)", from)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.ConnectWithDialer(cctx, s.Config.Net, s.Config.Addr, s.Config.User, s.Config.Passwd, "", o.dial,
		func(c *client.Conn) error {
			c.SetTLSConfig(o.tls)
			c.SetAttributes(map[string]string{"_client_role": "binary_log_listener", "program_name": replicaHost})
			return nil
		})
	if err != nil {
		return nil, err
	}
	d := &dumpConn{c: c, semiSync: o.semiSync}
	if err := d.start(o, s.Config.User, from); err != nil {
		c.Close()
		return nil, err
	}
	return d, nil
}

// start sets the session up as a replica's and sends the dump command.
func (d *dumpConn) start(o dumpOptions, user string, from catalog.Position) error {
	var setup []string
	// A replica that names a checksum algorithm tells the server it reads
	// checksummed events; the server then sends them as its binlog holds
	// them, checksums included.
	r, err := d.c.Execute("SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'")
	if err != nil {
		return err
	}
	if alg, _ := r.GetString(0, 1); alg != "" {
		setup = append(setup, "SET @master_binlog_checksum = 'NONE', @source_binlog_checksum = 'NONE'")
	}
	if o.flavor == MariaDB {
		// MARIA_SLAVE_CAPABILITY_GTID: the replica reads GTID events.
		setup = append(setup, "SET @mariadb_slave_capability = 4")
	}
	if o.heartbeat > 0 {
		setup = append(setup, fmt.Sprintf("SET @master_heartbeat_period = %d, @source_heartbeat_period = %d", o.heartbeat, o.heartbeat))
	}
	id, err := randomUUID()
	if err != nil {
		return err
	}
	setup = append(setup, fmt.Sprintf("SET @slave_uuid = '%s', @replica_uuid = '%s'", id, id))
	if o.semiSync {
		setup = append(setup, "SET @rpl_semi_sync_slave = 1, @rpl_semi_sync_replica = 1")
	}
	for _, q := range setup {
		if _, err := d.c.Execute(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}

	reg := make([]byte, 4, 32+len(replicaHost)+len(user))
	reg = append(reg, comRegisterReplica)
	reg = binary.LittleEndian.AppendUint32(reg, o.serverID)
	reg = append(reg, byte(len(replicaHost)))
	reg = append(reg, replicaHost...)
	if len(user) > 255 {
		user = user[:255]
	}
	reg = append(reg, byte(len(user)))
	reg = append(reg, user...)
	reg = append(reg, 0)                           // no password
	reg = binary.LittleEndian.AppendUint16(reg, 0) // no port to connect back to
	reg = binary.LittleEndian.AppendUint32(reg, 0) // replication rank, unused
	reg = binary.LittleEndian.AppendUint32(reg, 0) // the source's id: the server fills it
	d.c.ResetSequence()
	if err := d.c.WritePacket(reg); err != nil {
		return fmt.Errorf("register as a replica: %w", err)
	}
	if _, err := d.c.ReadOKPacket(); err != nil {
		return fmt.Errorf("register as a replica: %w", err)
	}

	dump := make([]byte, 4, 4+11+len(from.File))
	dump = append(dump, comBinlogDump)
	dump = binary.LittleEndian.AppendUint32(dump, uint32(from.Pos))
	dump = binary.LittleEndian.AppendUint16(dump, o.flavor.dumpFlags())
	dump = binary.LittleEndian.AppendUint32(dump, o.serverID)
	dump = append(dump, from.File...)
	d.c.ResetSequence()
	if err := d.c.WritePacket(dump); err != nil {
		return fmt.Errorf("ask for the binlog: %w", err)
	}
	return nil
}

// errDumpEnded is the server ending the binlog dump without an error.
var errDumpEnded = errors.New("the server ended the binlog dump")

// next reads the next event. waited reports that the server waits for its
// acknowledgement (only on a semi-synchronous connection). The event's
// bytes are the caller's.
func (d *dumpConn) next() (ev []byte, waited bool, err error) {
	data, err := d.c.ReadPacket()
	if err != nil {
		return nil, false, err
	}
	switch data[0] {
	case gomysql.OK_HEADER:
	case gomysql.ERR_HEADER:
		return nil, false, d.c.HandleErrorPacket(data)
	case gomysql.EOF_HEADER:
		return nil, false, errDumpEnded
	default:
		return nil, false, fmt.Errorf("binlog dump: a packet starting with 0x%02x, not an event", data[0])
	}
	ev = data[1:]
	if d.semiSync {
		if len(ev) < 2 || ev[0] != semiSyncIndicator {
			return nil, false, errors.New("binlog dump: an event without the semi-synchronous header the server promised")
		}
		waited = ev[1] == 1
		ev = ev[2:]
		if waited {
			// The server starts its packets' numbering anew after an
			// event it waits on (the acknowledgement, whenever it is
			// sent, is packet 0 of its own exchange).
			d.c.Sequence = 1
		}
	}
	return ev, waited, nil
}

// ack acknowledges every event the server waits on up to position p (the
// end of the last event acknowledged).
func (d *dumpConn) ack(p catalog.Position) error {
	b := make([]byte, 4, 4+1+8+len(p.File))
	b = append(b, semiSyncIndicator)
	b = binary.LittleEndian.AppendUint64(b, p.Pos)
	b = append(b, p.File...)
	n := len(b) - 4
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), 0
	d.ackMu.Lock()
	defer d.ackMu.Unlock()
	if _, err := d.c.Conn.Conn.Write(b); err != nil {
		return fmt.Errorf("acknowledge %s: %w", p, err)
	}
	return nil
}

// close closes the connection.
func (d *dumpConn) close() { d.c.Close() }

// randomUUID is a random (version 4) UUID in its text form.
func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
