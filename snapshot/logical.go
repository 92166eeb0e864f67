// Package snapshot takes snapshots of a MySQL or MariaDB server into the
// archive and loads them back.
//
// A logical snapshot (TakeLogical, LoadLogical) is a consistent, parallel,
// chunked dump: schemas, sequences, tables, rows in a LOAD DATA format,
// views, routines, triggers, events, users and grants, consistent with the
// binlog position recorded in its manifest. What a restore would need and
// the snapshot cannot hold fails the snapshot.
//
// Physical snapshots, copies of the server's files, are package
// snapshot/physical's. Both kinds of restore build the new datadir out of
// sight with Staging and MoveInto, here.
package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults for LogicalOptions fields left at their zero value.
const (
	DefaultChunkRows       int64 = 1_000_000
	DefaultChunkBytes      int64 = 64 << 20
	DefaultLockWaitTimeout       = 2 * time.Second
	DefaultLockAttempts          = 10
)

// LogicalOptions configures TakeLogical.
type LogicalOptions struct {
	// Source is the server to dump. The account needs SELECT, SHOW VIEW,
	// TRIGGER, EVENT, LOCK TABLES, RELOAD (for FLUSH TABLES WITH READ LOCK)
	// and BINLOG MONITOR / REPLICATION CLIENT (for SHOW MASTER STATUS), and
	// SELECT on the mysql schema to dump users and routines.
	Source *mysql.Config
	// Storage receives the snapshot's objects and manifest.
	Storage storage.Storage
	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger
	// Threads is the number of dumping connections; 0 means runtime.NumCPU().
	Threads int
	// ChunkRows and ChunkBytes bound a data chunk (estimated from table
	// statistics); 0 means DefaultChunkRows and DefaultChunkBytes.
	ChunkRows  int64
	ChunkBytes int64
	// LockWaitTimeout bounds each attempt to take the global read lock, so a
	// long-running query never keeps writes blocked longer than this; 0
	// means DefaultLockWaitTimeout. LockAttempts is how often it is tried
	// (with backoff between); 0 means DefaultLockAttempts.
	LockWaitTimeout time.Duration
	LockAttempts    int
	// Databases, when set, limits the dump to these schemas (users are
	// still dumped unless SkipUsers).
	Databases []string
	// SkipUsers leaves accounts and grants out.
	SkipUsers bool
	// IncludeOwnUser dumps the account the snapshot connects as. It is left
	// out by default: a restored server's agent account belongs to the
	// deployment (its secret), not to the snapshot.
	IncludeOwnUser bool
	// Timeline and Agent are recorded in the manifest.
	Timeline catalog.TimelineID
	Agent    string
	// Progress, when set, is called after each data object is stored, from
	// one goroutine at a time.
	Progress func(Progress)
}

// Progress is how far a snapshot or load has come.
type Progress struct {
	TablesTotal, TablesDone int
	ChunksTotal, ChunksDone int
	// Rows and Bytes count the rows and uncompressed bytes of finished
	// chunks; StoredBytes their compressed size.
	Rows        int64
	Bytes       int64
	StoredBytes int64
	// BytesTotal is the uncompressed size of all data chunks, when known
	// in advance (a load knows it; a snapshot does not).
	BytesTotal int64
}

// Validate names the first missing or invalid field.
func (o *LogicalOptions) Validate() error {
	switch {
	case o.Source == nil:
		return errors.New("logical snapshot options: Source is not set")
	case o.Storage == nil:
		return errors.New("logical snapshot options: Storage is not set")
	case o.Threads < 0:
		return fmt.Errorf("logical snapshot options: Threads %d is negative", o.Threads)
	case o.ChunkRows < 0:
		return fmt.Errorf("logical snapshot options: ChunkRows %d is negative", o.ChunkRows)
	case o.ChunkBytes < 0:
		return fmt.Errorf("logical snapshot options: ChunkBytes %d is negative", o.ChunkBytes)
	case o.LockWaitTimeout < 0:
		return fmt.Errorf("logical snapshot options: LockWaitTimeout %s is negative", o.LockWaitTimeout)
	case o.LockAttempts < 0:
		return fmt.Errorf("logical snapshot options: LockAttempts %d is negative", o.LockAttempts)
	}
	return nil
}

func (o LogicalOptions) withDefaults() LogicalOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Threads == 0 {
		o.Threads = runtime.NumCPU()
	}
	if o.ChunkRows == 0 {
		o.ChunkRows = DefaultChunkRows
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.LockWaitTimeout == 0 {
		o.LockWaitTimeout = DefaultLockWaitTimeout
	}
	if o.LockAttempts == 0 {
		o.LockAttempts = DefaultLockAttempts
	}
	return o
}

// dumper is one run of TakeLogical.
type dumper struct {
	opts   LogicalOptions
	log    *slog.Logger
	id     catalog.SnapshotID
	flavor binlog.Flavor
	db     *sql.DB

	mu       sync.Mutex
	objects  []catalog.SnapshotObject
	progress Progress
	tableDue map[*tablePlan]int // chunks not yet stored
}

// TakeLogical dumps the server into a new snapshot and returns its
// manifest, which it writes last: a snapshot that fails or is cancelled
// leaves objects without a manifest, which catalog.LoadSnapshots reports as
// Partial.
//
// Consistency: with every dumping connection opened, one connection takes
// FLUSH TABLES WITH READ LOCK, the others start REPEATABLE READ transactions
// WITH CONSISTENT SNAPSHOT concurrently, the binlog position and GTID state
// are read, as is the state of every sequence (see logical_sequences.go),
// and the lock is released; the manifest's WritesBlocked is how long that
// took. InnoDB tables are dumped exactly as of that position;
// tables of non-transactional engines as they are when read. DDL and
// account changes while the snapshot plans (before the lock) are not
// detected.
func TakeLogical(ctx context.Context, opts LogicalOptions) (*catalog.Manifest, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	started := time.Now().UTC()
	d := &dumper{
		opts:     opts,
		id:       catalog.NewSnapshotID(started),
		tableDue: map[*tablePlan]int{},
	}
	d.log = opts.Logger.With("component", "snapshot", "snapshot", string(d.id))

	info, err := readServerInfo(ctx, opts.Source)
	if err != nil {
		return nil, err
	}
	d.flavor = info.Flavor
	m := d.newManifest(info, started)

	if err := d.openPool(); err != nil {
		return nil, err
	}
	// Closing the pool closes every connection, which also releases a lock
	// or transaction an error path left behind.
	defer d.db.Close()
	coord, err := d.sessionConn(ctx, false)
	if err != nil {
		return nil, err
	}
	defer coord.Close()
	err = coord.QueryRowContext(ctx, "SELECT @@lower_case_table_names, @@innodb_page_size").
		Scan(&m.LowerCaseTableNames, &m.InnoDBPageSize)
	if err != nil {
		return nil, fmt.Errorf("read the server's lower_case_table_names and innodb_page_size: %w", err)
	}

	plan, err := d.plan(ctx, coord)
	if err != nil {
		return nil, err
	}
	d.startProgress(plan)
	workers, err := d.openWorkers(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConns(workers)
	point, err := d.consistentPoint(ctx, coord, workers, plan.sequences)
	if err != nil {
		return nil, err
	}
	d.log.Info("snapshot position taken", "binlog", point.pos.String(), "gtid", point.gtid,
		"writes_blocked", point.blocked, "lock_wait", point.lockWait, "lock_attempts", point.attempts)

	lay, err := d.dump(ctx, plan, workers)
	if err != nil {
		return nil, err
	}
	if err := d.storeLayout(ctx, lay); err != nil {
		return nil, err
	}
	d.finishManifest(ctx, m, point, lay)
	if err := catalog.WriteManifest(ctx, opts.Storage, m); err != nil {
		return nil, fmt.Errorf("write manifest of snapshot %s: %w", d.id, err)
	}
	d.log.Info("snapshot complete", "tables", len(m.Tables), "bytes", m.Bytes, "stored_bytes", m.StoredBytes,
		"duration", m.Finished.Sub(m.Started))
	return m, nil
}

// readServerInfo reads the server's identity and fails on settings that
// make archiving its binlog impossible.
func readServerInfo(ctx context.Context, cfg *mysql.Config) (binlog.ServerInfo, error) {
	src, err := binlog.NewSource(cfg)
	if err != nil {
		return binlog.ServerInfo{}, err
	}
	info, err := src.Info(ctx)
	src.Close()
	if err != nil {
		return binlog.ServerInfo{}, fmt.Errorf("read server info: %w", err)
	}
	if _, err := info.Check(); err != nil {
		return binlog.ServerInfo{}, err
	}
	return info, nil
}

// newManifest describes the snapshot as far as it is known before the
// dump: what it is of and when it started.
func (d *dumper) newManifest(info binlog.ServerInfo, started time.Time) *catalog.Manifest {
	return &catalog.Manifest{
		ID:            d.id,
		Method:        catalog.MethodLogical,
		Flavor:        string(info.Flavor),
		ServerVersion: info.Version,
		ServerID:      info.ServerID,
		ServerUUID:    info.UUID,
		Timeline:      d.opts.Timeline,
		Started:       started,
		Agent:         d.opts.Agent,
	}
}

// openPool opens the pool of dumping connections: one per thread and the
// coordinating one.
func (d *dumper) openPool() error {
	cfg := d.opts.Source.Clone()
	// Arguments are interpolated so that every query uses the text
	// protocol, whose values are the server's text for every type.
	cfg.InterpolateParams = true
	withReadBuffer(cfg)
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("mysql connection settings: %w", err)
	}
	d.db = sql.OpenDB(conn)
	d.db.SetMaxOpenConns(d.opts.Threads + 1)
	d.db.SetMaxIdleConns(d.opts.Threads + 1)
	return nil
}

// startProgress sets the totals progress is reported against and the
// chunks each table waits for.
func (d *dumper) startProgress(p *plan) {
	d.progress.TablesTotal = len(p.tables)
	for _, t := range p.tables {
		d.progress.ChunksTotal += len(t.chunks)
		d.tableDue[t] = len(t.chunks)
	}
}

// openWorkers opens a data connection for each thread.
func (d *dumper) openWorkers(ctx context.Context) ([]*sql.Conn, error) {
	workers := make([]*sql.Conn, d.opts.Threads)
	for i := range workers {
		var err error
		if workers[i], err = d.sessionConn(ctx, true); err != nil {
			closeConns(workers[:i])
			return nil, err
		}
	}
	return workers, nil
}

// closeConns closes connections, the last opened first.
func closeConns(conns []*sql.Conn) {
	for i := len(conns) - 1; i >= 0; i-- {
		conns[i].Close()
	}
}

// storeLayout stores the layout, which a load reads first.
func (d *dumper) storeLayout(ctx context.Context, lay *layout) error {
	obj, err := d.putJSON(ctx, layoutObject, lay)
	if err != nil {
		return err
	}
	d.addObject(obj)
	return nil
}

// finishManifest records the dump in m: its position, its objects in name
// order and their sizes, its tables, and when it finished.
func (d *dumper) finishManifest(ctx context.Context, m *catalog.Manifest, p point, lay *layout) {
	m.Binlog = p.pos
	m.ConsistentAt = p.at
	m.GTIDSet = p.gtid
	m.TimelineUID = catalog.TimelineUIDOf(ctx, d.opts.Storage, d.opts.Timeline)
	m.WritesBlocked = p.blocked
	m.Objects = d.objects
	slices.SortFunc(m.Objects, func(a, b catalog.SnapshotObject) int { return strings.Compare(a.Name, b.Name) })
	for _, o := range m.Objects {
		m.Bytes += o.Size
		m.StoredBytes += o.StoredSize
	}
	for _, t := range lay.Tables {
		m.Tables = append(m.Tables, catalog.TableInfo{Schema: t.Schema, Name: t.Name, Rows: t.Rows, Digest: t.Digest})
	}
	m.Finished = time.Now().UTC()
}

// sessionSettings are every dumping connection's: timestamps are dumped in
// UTC and loaded in UTC; an empty sql_mode keeps ANSI_QUOTES and friends
// out of SHOW CREATE output.
const sessionSettings = "SET SESSION time_zone = '+00:00', sql_mode = '', net_write_timeout = 3600, net_read_timeout = 3600, wait_timeout = 86400"

// dataSessionSettings are those of a connection that reads rows: values
// come in the column's own character set, unconverted. DigestTables reads
// rows with them too, so that its lines are the dump's.
var dataSessionSettings = []string{sessionSettings, "SET SESSION character_set_results = NULL"}

// sessionConn opens a dedicated connection with the session settings every
// dumping connection shares; data connections also receive values unconverted.
func (d *dumper) sessionConn(ctx context.Context, data bool) (*sql.Conn, error) {
	c, err := d.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.opts.Source.Addr, err)
	}
	stmts := []string{sessionSettings}
	if data {
		stmts = append(stmts, dataSessionSettings[1:]...)
		stmts = append(stmts, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
	}
	stmts = append(stmts, flavorSessionSettings(d.flavor)...)
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			c.Close()
			return nil, fmt.Errorf("set up session (%s): %w", s, err)
		}
	}
	return c, nil
}

// dump writes the schema objects and every data chunk, and returns the layout.
func (d *dumper) dump(ctx context.Context, p *plan, workers []*sql.Conn) (*layout, error) {
	lay := &layout{
		Version:   layoutVersion,
		Databases: p.databases,
		Sequences: p.sequences,
		Views:     p.views,
		Routines:  p.routines,
		Triggers:  p.triggers,
		Events:    p.events,
		Users:     p.users,
	}
	type job struct {
		t *tablePlan
		i int
	}
	jobs := make(chan job)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		// Schema objects are written first, by the feeding goroutine,
		// while the workers start on the data.
		for _, t := range p.tables {
			obj, err := d.putBytes(gctx, t.def.SchemaObject, []byte(t.create))
			if err != nil {
				return err
			}
			d.addObject(obj)
		}
		for _, t := range p.tables {
			for i := range t.chunks {
				select {
				case jobs <- job{t, i}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for _, w := range workers {
		g.Go(func() error {
			for j := range jobs {
				if err := d.dumpChunk(gctx, w, j.t, j.i); err != nil {
					return err
				}
			}
			// The transaction only read; ending it frees its read view.
			if _, err := w.ExecContext(gctx, "COMMIT"); err != nil {
				return fmt.Errorf("end snapshot transaction: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, t := range p.tables {
		def := t.def
		def.Chunks = make([]chunkDef, len(t.chunks))
		var d rowDigest
		for i, c := range t.chunks {
			def.Chunks[i] = chunkDef{Object: c.object, Rows: c.digest.rows}
			d.merge(c.digest)
		}
		def.Rows, def.Digest = d.rows, d.String()
		lay.Tables = append(lay.Tables, def)
	}
	return lay, nil
}

func (d *dumper) addObject(o catalog.SnapshotObject) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.objects = append(d.objects, o)
}

// chunkDone records a stored chunk and reports progress.
func (d *dumper) chunkDone(t *tablePlan, rows int64, o catalog.SnapshotObject) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.objects = append(d.objects, o)
	d.progress.ChunksDone++
	d.progress.Rows += rows
	d.progress.Bytes += o.Size
	d.progress.StoredBytes += o.StoredSize
	d.tableDue[t]--
	if d.tableDue[t] == 0 {
		d.progress.TablesDone++
	}
	if d.opts.Progress != nil {
		d.opts.Progress(d.progress)
	}
}
