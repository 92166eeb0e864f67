package binlog

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
)

// ServedFile is one local binlog file a Server serves under the source's name.
type ServedFile struct {
	// Name is the file's name on the source (mysql-bin.000042): the name a
	// replica asks for and sees in Rotate events.
	Name string
	// Path is the local file, magic first.
	Path string
	// End is where serving the file stops, an event boundary; 0 serves it to
	// its end. A replica that has read up to End gets nothing more.
	End uint64
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// User and Password are the only account the server accepts.
	User, Password string
	// TLS, when set, is offered to replicas (see NewServerTLS), and a
	// replica that does not take it is refused; nil serves in plaintext.
	TLS *tls.Config
	// GTIDMode is the gtid_mode the server reports to MySQL replicas; ""
	// reports OFF. A MySQL replica refuses a source whose mode is more than
	// one step from its own (OFF, OFF_PERMISSIVE, ON_PERMISSIVE, ON) before
	// it reads anything; given the replica's own mode, that check passes
	// and each served transaction is judged by the replica as it comes,
	// with a GTID or without.
	GTIDMode string
	// WriteTimeout bounds each write to a replica; 0 means DefaultServerWriteTimeout.
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// DefaultServerWriteTimeout is how long a replica may leave the server's
// writes unread before the connection is dropped.
const DefaultServerWriteTimeout = 5 * time.Minute

// Server serves local binlog files over the MySQL replication protocol, as
// the source that wrote them would: a MariaDB or MySQL replica pointed at it
// with a file name and position replicates them. It exists for replay during
// a restore, so it answers only what a replica asks before dumping, and
// after the last byte of the last file it idles (sending heartbeats) until
// the replica disconnects or the server stops.
type Server struct {
	files []ServedFile
	opts  ServerOptions
	log   *slog.Logger

	// What the files' first format description says about the source.
	serverID uint32
	version  string
	checksum bool
	uuid     string
}

// NewServer returns a server for files, which must be consecutive binlog
// files of one source. It reads the first file's format description for
// the source's server_id, version and checksum algorithm.
func NewServer(files []ServedFile, opts ServerOptions) (*Server, error) {
	if len(files) == 0 {
		return nil, errors.New("binlog server: no files to serve")
	}
	if opts.User == "" {
		return nil, errors.New("binlog server: user is empty")
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = DefaultServerWriteTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{files: files, opts: opts, log: opts.Logger.With("component", "binlog-server")}
	fh, err := os.Open(files[0].Path)
	if err != nil {
		return nil, fmt.Errorf("binlog server: %w", err)
	}
	defer fh.Close()
	ev, _, err := NewScanner(fh, 0).Next()
	if err != nil {
		return nil, fmt.Errorf("binlog server: read %s: %w", files[0].Name, err)
	}
	h, err := ParseHeader(ev)
	if err != nil {
		return nil, fmt.Errorf("binlog server: read %s: %w", files[0].Name, err)
	}
	if h.Type != FormatDescription {
		return nil, fmt.Errorf("binlog server: %s starts with event type %d, not a format description", files[0].Name, h.Type)
	}
	f, err := ParseFormat(ev)
	if err != nil {
		return nil, fmt.Errorf("binlog server: read %s: %w", files[0].Name, err)
	}
	s.serverID, s.version, s.checksum = h.ServerID, f.ServerVersion, f.Checksum
	var u [16]byte
	_, _ = rand.Read(u[:])
	s.uuid = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
	return s, nil
}

// Serve accepts replica connections on ln until ctx ends, then closes ln
// and every connection and returns nil once their goroutines are done. It
// returns an error if ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			ln.Close()
			return fmt.Errorf("binlog server: accept: %w", err)
		}
		wg.Go(func() {
			defer conn.Close()
			cstop := context.AfterFunc(ctx, func() { conn.Close() })
			defer cstop()
			log := s.log.With("replica", conn.RemoteAddr().String())
			if err := s.serveConn(ctx, conn, log); err != nil && ctx.Err() == nil {
				log.Warn("replica connection ended", "err", err)
			}
		})
	}
}

// handshakeVersion is the version the server announces: the source's.
// MariaDB servers prefix theirs with "5.5.5-" for the sake of old clients,
// and MariaDB's client library strips it again.
func (s *Server) handshakeVersion() string {
	if strings.Contains(strings.ToLower(s.version), "mariadb") {
		return "5.5.5-" + s.version
	}
	return s.version
}

// session is what one replica connection has set.
type session struct {
	vars map[string]string
}

// authMethod is the authentication the server asks of replicas: MySQL's
// default, caching_sha2_password, for a MySQL source when the server offers
// TLS (over which the replica sends the password itself; MySQL 9 has no
// mysql_native_password any more), mysql_native_password otherwise.
func (s *Server) authMethod() string {
	if s.opts.TLS != nil && !strings.Contains(strings.ToLower(s.version), "mariadb") {
		return mysql.AUTH_CACHING_SHA2_PASSWORD
	}
	return mysql.AUTH_NATIVE_PASSWORD
}

func (s *Server) serveConn(ctx context.Context, raw net.Conn, log *slog.Logger) error {
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	method := s.authMethod()
	auth := accounts{InMemoryAuthenticationHandler: server.NewInMemoryAuthenticationHandler(method), requireTLS: s.opts.TLS != nil}
	if err := auth.AddUser(s.opts.User, s.opts.Password); err != nil {
		return fmt.Errorf("add user: %w", err)
	}
	cfg := server.NewServerWithAuth(s.handshakeVersion(), mysql.DEFAULT_COLLATION_ID, method, nil, s.opts.TLS, &server.DefaultAuthenticationProvider{})
	c, err := cfg.NewCustomizedConn(raw, auth, server.EmptyHandler{})
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	// The connection from here on: TLS over raw, when the replica took it.
	conn := c.Conn.Conn
	_ = conn.SetDeadline(time.Time{})
	sess := &session{vars: map[string]string{}}
	for {
		c.ResetSequence()
		// A replica sends its setup queries back to back; a connection idle
		// for this long before dumping is abandoned.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
		data, err := c.ReadPacket()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read command: %w", err)
		}
		_ = conn.SetReadDeadline(time.Time{})
		if len(data) == 0 {
			return errors.New("empty command packet")
		}
		var reply any
		switch cmd, body := data[0], data[1:]; cmd {
		case mysql.COM_QUIT:
			return nil
		case mysql.COM_PING, mysql.COM_REGISTER_SLAVE:
			log.Debug("command", "cmd", cmd)
			reply = nil
		case mysql.COM_QUERY:
			q := string(body)
			log.Debug("query", "query", q)
			r, err := s.answer(sess, q)
			if err != nil {
				reply = err
			} else {
				reply = r
			}
		case mysql.COM_BINLOG_DUMP:
			if len(body) < 10 {
				reply = mysql.NewError(mysql.ER_MALFORMED_PACKET, "malformed COM_BINLOG_DUMP")
				break
			}
			pos := uint64(binary.LittleEndian.Uint32(body))
			flags := binary.LittleEndian.Uint16(body[4:])
			name := string(body[10:])
			log.Debug("binlog dump", "file", name, "pos", pos, "flags", flags)
			err := s.dump(ctx, c, conn, sess, name, pos, flags&binlogDumpNonBlock != 0, log)
			var me *mysql.MyError
			if errors.As(err, &me) {
				reply = me
				break
			}
			if err != nil {
				return err
			}
			if flags&binlogDumpNonBlock != 0 {
				continue
			}
			return nil
		default:
			log.Debug("unsupported command", "cmd", cmd)
			reply = mysql.NewError(mysql.ER_UNKNOWN_COM_ERROR, fmt.Sprintf("command %d is not supported by the restore's binlog server", cmd))
		}
		if err := c.WriteValue(reply); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
	}
}

// binlogDumpNonBlock asks the server to end the dump with an EOF packet at
// the end of the binlog instead of waiting for more (mysqlbinlog without
// --stop-never).
const binlogDumpNonBlock = 0x01

// answer replies to a query a replica sends while it sets up: user
// variables it sets, the source's identity, its checksum algorithm. Any
// other SET succeeds and any other SELECT returns NULLs, which replicas
// take as "not supported here".
func (s *Server) answer(sess *session, q string) (*mysql.Result, error) {
	q = strings.TrimRight(strings.TrimSpace(q), "; \t\n")
	lower := strings.ToLower(q)
	switch {
	case strings.HasPrefix(lower, "set "):
		for _, a := range splitTop(q[4:]) {
			name, val, ok := strings.Cut(a, "=")
			name = strings.ToLower(strings.TrimSpace(name))
			if !ok || !strings.HasPrefix(name, "@") || strings.HasPrefix(name, "@@") {
				continue
			}
			sess.vars[name] = s.value(sess, strings.TrimSpace(val))
		}
		return nil, nil
	case strings.HasPrefix(lower, "select "):
		exprs := splitTop(q[7:])
		names := make([]string, len(exprs))
		row := make([]any, len(exprs))
		for i, e := range exprs {
			e = strings.TrimSpace(e)
			names[i] = e
			if v := s.value(sess, e); v != "" {
				row[i] = v
			}
		}
		rs, err := mysql.BuildSimpleResultset(names, [][]any{row}, false)
		if err != nil {
			return nil, fmt.Errorf("build result: %w", err)
		}
		return mysql.NewResult(rs), nil
	case strings.HasPrefix(lower, "show variables like "), strings.HasPrefix(lower, "show global variables like "):
		_, pat, _ := strings.Cut(lower, " like ")
		pat = strings.Trim(strings.TrimSpace(pat), "'\"")
		var rows [][]any
		if v := s.variable(pat); v != "" {
			rows = append(rows, []any{pat, v})
		}
		rs, err := mysql.BuildSimpleResultset([]string{"Variable_name", "Value"}, rows, false)
		if err != nil {
			return nil, fmt.Errorf("build result: %w", err)
		}
		return mysql.NewResult(rs), nil
	case strings.HasPrefix(lower, "show "):
		rs, err := mysql.BuildSimpleResultset([]string{"Value"}, nil, false)
		if err != nil {
			return nil, fmt.Errorf("build result: %w", err)
		}
		return mysql.NewResult(rs), nil
	}
	return nil, nil
}

// value evaluates the expressions replicas select or assign; "" is NULL.
func (s *Server) value(sess *session, expr string) string {
	e := strings.ToLower(strings.TrimSpace(expr))
	switch {
	case e == "unix_timestamp()":
		return strconv.FormatInt(time.Now().Unix(), 10)
	case e == "version()":
		return s.version
	case strings.HasPrefix(e, "'") && strings.HasSuffix(e, "'") && len(e) >= 2,
		strings.HasPrefix(e, `"`) && strings.HasSuffix(e, `"`) && len(e) >= 2:
		return expr[1 : len(expr)-1]
	case strings.HasPrefix(e, "@@"):
		name := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(e, "@@"), "global."), "session.")
		return s.variable(name)
	case strings.HasPrefix(e, "@"):
		return sess.vars[e]
	}
	if _, err := strconv.ParseInt(e, 10, 64); err == nil {
		return e
	}
	return ""
}

// variable returns the source's value of a global variable a replica asks
// about; "" for the ones the server does not know.
func (s *Server) variable(name string) string {
	switch strings.ToLower(name) {
	case "server_id":
		return strconv.FormatUint(uint64(s.serverID), 10)
	case "version":
		return s.version
	case "binlog_checksum":
		if s.checksum {
			return "CRC32"
		}
		return "NONE"
	case "server_uuid":
		return s.uuid
	case "gtid_mode":
		if s.opts.GTIDMode != "" {
			return s.opts.GTIDMode
		}
		return "OFF"
	case "gtid_domain_id":
		return "0"
	case "time_zone":
		return "SYSTEM"
	case "collation_server":
		return "utf8mb4_general_ci"
	case "character_set_server":
		return "utf8mb4"
	}
	return ""
}

// splitTop splits s at the commas outside parentheses and quotes.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			}
		case ch == '\'' || ch == '"' || ch == '`':
			quote = ch
		case ch == '(':
			depth++
		case ch == ')':
			depth--
		case ch == ',' && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// errNoFile is the error a source gives a replica asking for a file it lacks.
func errNoFile(name string) error {
	return mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG,
		fmt.Sprintf("Could not find first log file name in binary log index file (the restore serves %s)", name))
}

// dump streams the files from name:pos to the replica. It returns a
// *mysql.MyError for a request it refuses, before sending anything.
func (s *Server) dump(ctx context.Context, c *server.Conn, conn net.Conn, sess *session, name string, pos uint64, nonBlock bool, log *slog.Logger) error {
	idx := -1
	for i, f := range s.files {
		if f.Name == name {
			idx = i
		}
	}
	if idx < 0 {
		return errNoFile(name)
	}
	if pos < FirstEventPos {
		pos = FirstEventPos
	}
	w := &packetWriter{seq: c.Sequence, w: bufio.NewWriterSize(&deadlineWriter{conn: conn, timeout: s.opts.WriteTimeout}, 256<<10)}
	// Events from the files go out as they are, checksums included, to a
	// replica that declared itself checksum-aware by setting
	// @master_binlog_checksum; the events the server makes up carry a
	// checksum as that variable says until the first format description,
	// then as the file's (what a MariaDB source does).
	w.checksum = strings.EqualFold(sess.vars["@master_binlog_checksum"], "CRC32") ||
		strings.EqualFold(sess.vars["@source_binlog_checksum"], "CRC32")
	// hbName:hbPos is where the replica believes it is in the source's
	// binlog, which heartbeats must name: after a file's final Rotate, the
	// start of the next file.
	var hbName string
	var hbPos uint64
	fakeRotate := true
	for i := idx; i < len(s.files); i++ {
		from := uint64(FirstEventPos)
		if i == idx {
			from = pos
		}
		fe, err := s.sendFile(ctx, w, s.files[i], from, fakeRotate)
		if err != nil {
			var me *mysql.MyError
			if errors.As(err, &me) {
				// Refused mid-stream: the error packet follows what was sent.
				_ = w.w.Flush()
				c.Sequence = w.seq
			}
			return err
		}
		hbName, hbPos = s.files[i].Name, fe.end
		if fe.rotatedTo != "" {
			hbName, hbPos = fe.rotatedTo, fe.rotatedPos
		}
		// A replica learns the next file's name from the Rotate event a
		// file ends with; a file without one (the source crashed) needs a
		// fake Rotate before the next file's events.
		fakeRotate = i+1 < len(s.files) && fe.rotatedTo != s.files[i+1].Name
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("send binlog: %w", err)
	}
	log.Debug("served to the end", "file", s.files[len(s.files)-1].Name, "replica_at", hbName+":"+strconv.FormatUint(hbPos, 10))
	if nonBlock {
		if err := w.packet([]byte{mysql.EOF_HEADER, 0, 0, 0, 0}); err != nil {
			return err
		}
		if err := w.w.Flush(); err != nil {
			return fmt.Errorf("send eof: %w", err)
		}
		c.Sequence = w.seq
		return nil
	}
	return s.idle(ctx, w, conn, sess, hbName, hbPos)
}

// fileEnd is where sending a file ended.
type fileEnd struct {
	// end is the position after the last event sent.
	end uint64
	// rotatedTo and rotatedPos are what the Rotate event the file ends
	// with names ("" when none was sent).
	rotatedTo  string
	rotatedPos uint64
}

// sendFile sends one file's events from position from on (and its format
// description first).
func (s *Server) sendFile(ctx context.Context, w *packetWriter, f ServedFile, from uint64, fakeRotate bool) (fileEnd, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return fileEnd{}, fmt.Errorf("open %s: %w", f.Name, err)
	}
	defer fh.Close()
	if fakeRotate {
		if err := w.event(s.rotateEvent(f.Name, from, w.checksum)); err != nil {
			return fileEnd{}, err
		}
	}
	sc := NewScanner(fh, 0)
	var format Format
	var fe fileEnd
	pos := uint64(FirstEventPos)
	found := from == FirstEventPos
	for {
		if ctx.Err() != nil {
			return fileEnd{}, ctx.Err()
		}
		ev, at, err := sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fileEnd{}, fmt.Errorf("read %s at %d: %w", f.Name, sc.Pos(), err)
		}
		end := at + uint64(len(ev))
		if f.End > 0 && end > f.End {
			break
		}
		h, err := ParseHeader(ev)
		if err != nil {
			return fileEnd{}, fmt.Errorf("read %s at %d: %w", f.Name, at, err)
		}
		switch {
		case h.Type == FormatDescription:
			if format, err = ParseFormat(ev); err != nil {
				return fileEnd{}, fmt.Errorf("read %s at %d: %w", f.Name, at, err)
			}
			w.checksum = format.Checksum
			if at < from {
				// The replica starts inside the file: it needs the format
				// description all the same, marked as not advancing its
				// position, and without a creation time that would make it
				// think the source restarted and drop its temporary tables.
				ev = midFileFormat(ev, format.Checksum)
			}
		case at < from:
			continue
		case at > from && !found:
			return fileEnd{}, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG,
				fmt.Sprintf("requested position %d in %s is not the start of an event", from, f.Name))
		case h.Type == RotateEvent && !h.Artificial():
			if next, npos, err := format.ParseRotate(ev); err == nil {
				fe.rotatedTo, fe.rotatedPos = next, npos
			}
		}
		if at >= from {
			found = true
			pos = end
		}
		if err := w.event(ev); err != nil {
			return fileEnd{}, err
		}
	}
	if pos < from {
		return fileEnd{}, mysql.NewError(mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG,
			fmt.Sprintf("requested position %d is past the end of %s (%d)", from, f.Name, pos))
	}
	if f.End > 0 && pos != f.End {
		return fileEnd{}, fmt.Errorf("%s: serving end %d is not an event boundary (the events end at %d)", f.Name, f.End, pos)
	}
	fe.end = pos
	return fe, nil
}

// midFileFormat returns a copy of a format description with log_pos and the
// creation time zeroed and the checksum recomputed, as a source sends it to
// a replica starting after position 4.
func midFileFormat(ev []byte, checksum bool) []byte {
	out := append([]byte(nil), ev...)
	binary.LittleEndian.PutUint32(out[13:], 0)
	if len(out) >= HeaderSize+56 {
		binary.LittleEndian.PutUint32(out[HeaderSize+52:], 0)
	}
	if checksum {
		binary.LittleEndian.PutUint32(out[len(out)-4:], crc32.ChecksumIEEE(out[:len(out)-4]))
	}
	return out
}

// rotateEvent makes the artificial Rotate a source sends before a file's events.
func (s *Server) rotateEvent(name string, pos uint64, checksum bool) []byte {
	body := binary.LittleEndian.AppendUint64(nil, pos)
	body = append(body, name...)
	return s.artificial(RotateEvent, 0, artificialFlag, body, checksum)
}

// artificial makes an event that is not in any file.
func (s *Server) artificial(typ EventType, logPos uint32, flags uint16, body []byte, checksum bool) []byte {
	size := HeaderSize + len(body)
	if checksum {
		size += 4
	}
	ev := make([]byte, HeaderSize, size)
	ev[4] = byte(typ)
	binary.LittleEndian.PutUint32(ev[5:], s.serverID)
	binary.LittleEndian.PutUint32(ev[9:], uint32(size))
	binary.LittleEndian.PutUint32(ev[13:], logPos)
	binary.LittleEndian.PutUint16(ev[17:], flags)
	ev = append(ev, body...)
	if checksum {
		ev = binary.LittleEndian.AppendUint32(ev, crc32.ChecksumIEEE(ev))
	}
	return ev
}

// idle keeps a replica that has everything connected: it sends heartbeats
// at the period the replica asked for, so that it does not time out and
// reconnect, until the replica disconnects or ctx ends.
func (s *Server) idle(ctx context.Context, w *packetWriter, conn net.Conn, sess *session, name string, pos uint64) error {
	gone := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		// A replica sends nothing during a dump: a read returns only when it
		// hangs up or the connection is closed.
		defer close(gone)
		_, _ = io.Copy(io.Discard, conn)
	})
	defer conn.Close()
	var tick <-chan time.Time
	if p := heartbeatPeriod(sess); p > 0 {
		t := time.NewTicker(p)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-gone:
			return nil
		case <-tick:
			if err := w.event(s.artificial(HeartbeatEvent, uint32(pos), 0, []byte(name), w.checksum)); err != nil {
				return err
			}
			if err := w.w.Flush(); err != nil {
				return fmt.Errorf("send heartbeat: %w", err)
			}
		}
	}
}

// heartbeatPeriod is the period a replica set in @master_heartbeat_period
// (MySQL 8.0.26+: @source_heartbeat_period), in nanoseconds.
func heartbeatPeriod(sess *session) time.Duration {
	for _, n := range []string{"@master_heartbeat_period", "@source_heartbeat_period"} {
		if v, err := strconv.ParseFloat(sess.vars[n], 64); err == nil && v > 0 {
			return max(time.Duration(v), time.Second)
		}
	}
	return 0
}

// packetWriter frames replication packets (an OK byte and an event) into
// protocol packets, splitting payloads of 16 MiB and more, and buffers them
// so that small events do not cost a write each.
type packetWriter struct {
	w   *bufio.Writer
	seq uint8
	// checksum is whether the events the server makes up carry one.
	checksum bool
}

func (p *packetWriter) event(ev []byte) error {
	return p.packet([]byte{mysql.OK_HEADER}, ev)
}

// packet writes the concatenation of parts as one logical packet.
func (p *packetWriter) packet(parts ...[]byte) error {
	n := 0
	for _, b := range parts {
		n += len(b)
	}
	for {
		chunk := min(n, mysql.MaxPayloadLen)
		hdr := [4]byte{byte(chunk), byte(chunk >> 8), byte(chunk >> 16), p.seq}
		p.seq++
		if _, err := p.w.Write(hdr[:]); err != nil {
			return fmt.Errorf("send binlog: %w", err)
		}
		left := chunk
		for left > 0 {
			k := min(left, len(parts[0]))
			if _, err := p.w.Write(parts[0][:k]); err != nil {
				return fmt.Errorf("send binlog: %w", err)
			}
			parts[0] = parts[0][k:]
			if len(parts[0]) == 0 {
				parts = parts[1:]
			}
			left -= k
		}
		n -= chunk
		// A payload of exactly a multiple of the maximum ends with an
		// empty packet.
		if n == 0 && chunk < mysql.MaxPayloadLen {
			return nil
		}
	}
}

// deadlineWriter gives every write to the connection a deadline.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(b)
}
