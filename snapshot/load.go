package snapshot

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// LoadOptions configures LoadLogical.
type LoadOptions struct {
	// Threads is the number of loading connections; 0 means runtime.NumCPU().
	Threads int
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// WriteBinlog keeps the load in the target's binlog. By default the
	// loading sessions set sql_log_bin = 0 when the account may.
	WriteBinlog bool
	// SkipUsers leaves the snapshot's accounts and grants out.
	SkipUsers bool
	// Progress, when set, is called after each chunk is loaded, from one
	// goroutine at a time.
	Progress func(Progress)

	// chunked loads a transaction per chunk even where the target would
	// load each table in one statement (bulkLoadsTables).
	chunked bool
	// pauseStatsFrom replaces defaultPauseStatsFrom when positive.
	pauseStatsFrom int64
}

// defaultPauseStatsFrom is the size of a table's data (uncompressed) from
// which its statistics are not recalculated while it loads: the two ALTER
// TABLE statements that pause and resume them cost more than the
// recalculations they save on a small table, and thousands of them would
// add minutes to a load.
const defaultPauseStatsFrom = 16 << 20

// ErrNotLogical is returned by LoadLogical for a manifest of another method.
var ErrNotLogical = errors.New("snapshot is not logical")

// maxLayoutSize bounds the layout object read into memory.
const maxLayoutSize = 1 << 30

// loadSeq makes LOAD DATA reader names unique within the process.
var loadSeq atomic.Uint64

// loader is one run of LoadLogical.
type loader struct {
	st   storage.Storage
	m    *catalog.Manifest
	objs map[string]catalog.SnapshotObject
	opts LoadOptions
	log  *slog.Logger
	db   *sql.DB

	// wholeTables loads each table with one LOAD DATA statement reading
	// all its chunks (bulkLoadsTables); otherwise each chunk is a
	// transaction of its own.
	wholeTables bool
	// statsRecalc is, for each table whose statistics are not recalculated
	// while it loads, the STATS_AUTO_RECALC value to give it back.
	statsRecalc map[int]string

	mu       sync.Mutex
	progress Progress
	tableDue map[int]int
}

// LoadLogical loads a logical snapshot into the server that target names:
// it creates the databases and tables, loads the chunks in parallel with
// LOAD DATA LOCAL INFILE, then creates views, routines, triggers, events,
// accounts and grants. The target should be empty of the snapshot's
// databases: existing ones are an error. InnoDB tables of 16 MiB and more
// load without automatic statistics recalculation, are analyzed once
// loaded, and get their own STATS_AUTO_RECALC back.
//
// Integrity: every object's SHA-256 and size are checked against the
// manifest while it streams. A table (on MariaDB releases that bulk-load
// it, see bulkLoadsTables) or else each chunk is loaded in a transaction of
// its own, committed only once all its objects have been read and verified
// and the server reported no warning and exactly the rows the snapshot
// holds, so a corrupt chunk is rolled back, not applied (for transactional
// engines).
//
// The account needs to create and alter everything the snapshot holds
// (root, in practice), and the server must allow LOAD DATA LOCAL
// (local_infile=ON, MariaDB's default).
func LoadLogical(ctx context.Context, st storage.Storage, m *catalog.Manifest, target *mysql.Config, opts LoadOptions) error {
	if m.Method != catalog.MethodLogical {
		return fmt.Errorf("load snapshot %s: %w (method %q)", m.ID, ErrNotLogical, m.Method)
	}
	if target == nil {
		return errors.New("load snapshot: target is not set")
	}
	if opts.Threads < 0 {
		return fmt.Errorf("load options: Threads %d is negative", opts.Threads)
	}
	if opts.Threads == 0 {
		opts.Threads = runtime.NumCPU()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &loader{
		st:       st,
		m:        m,
		objs:     map[string]catalog.SnapshotObject{},
		opts:     opts,
		log:      opts.Logger.With("component", "snapshot", "snapshot", string(m.ID)),
		tableDue: map[int]int{},

		statsRecalc: map[int]string{},
	}
	for _, o := range m.Objects {
		l.objs[o.Name] = o
	}
	start := time.Now()
	var lay layout
	if err := l.readJSON(ctx, layoutObject, &lay); err != nil {
		return err
	}
	if lay.Version < 1 || lay.Version > layoutVersion {
		return fmt.Errorf("snapshot %s: layout version %d is not supported (want 1 to %d)", m.ID, lay.Version, layoutVersion)
	}

	cfg := target.Clone()
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("mysql connection settings: %w", err)
	}
	l.db = sql.OpenDB(conn)
	defer l.db.Close()
	l.db.SetMaxOpenConns(opts.Threads)
	l.db.SetMaxIdleConns(opts.Threads)

	ddl, err := l.sessionConn(ctx)
	if err != nil {
		return err
	}
	defer ddl.Close()
	var version string
	if err := ddl.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return fmt.Errorf("read target version: %w", err)
	}
	l.wholeTables = bulkLoadsTables(version) && !opts.chunked
	if err := l.createTables(ctx, ddl, &lay); err != nil {
		return err
	}
	if err := l.loadData(ctx, ddl, &lay); err != nil {
		return err
	}
	if err := l.createObjects(ctx, ddl, &lay); err != nil {
		return err
	}
	if !opts.SkipUsers {
		if err := l.createUsers(ctx, ddl, lay.Users); err != nil {
			return err
		}
	}
	l.log.Info("snapshot loaded", "tables", len(lay.Tables), "rows", l.progress.Rows, "bytes", l.progress.Bytes,
		"duration", time.Since(start))
	return nil
}

// sessionConn opens a connection with the loading session settings.
func (l *loader) sessionConn(ctx context.Context) (*sql.Conn, error) {
	c, err := l.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to target: %w", err)
	}
	// NO_AUTO_VALUE_ON_ZERO keeps a dumped 0 in an AUTO_INCREMENT column;
	// no strict mode, as the values came from the same column types.
	const set = "SET SESSION time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', " +
		"foreign_key_checks = 0, unique_checks = 0, net_read_timeout = 3600, net_write_timeout = 3600"
	if _, err := c.ExecContext(ctx, set); err != nil {
		c.Close()
		return nil, fmt.Errorf("set up load session: %w", err)
	}
	if !l.opts.WriteBinlog {
		if _, err := c.ExecContext(ctx, "SET SESSION sql_log_bin = 0"); err != nil {
			if !isAccessDenied(err) {
				c.Close()
				return nil, fmt.Errorf("set sql_log_bin: %w", err)
			}
			l.log.Debug("the load is written to the target's binlog: the account may not set sql_log_bin", "err", err)
		}
	}
	return c, nil
}

// verifier reads an object's uncompressed bytes and checks their size and
// SHA-256 against the manifest at EOF, returning an error wrapping
// storage.ErrChecksum instead of io.EOF on a mismatch.
type verifier struct {
	name string
	want catalog.SnapshotObject
	rc   io.ReadCloser
	dec  *zstd.Decoder
	h    hash.Hash
	n    int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.dec.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.want.Size {
			return n, fmt.Errorf("object %s: %w: %d bytes, manifest says %d", v.name, storage.ErrChecksum, v.n, v.want.Size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.SHA256 {
			return n, fmt.Errorf("object %s: %w: sha256 %s, manifest says %s", v.name, storage.ErrChecksum, got, v.want.SHA256)
		}
	} else if err != nil {
		err = fmt.Errorf("read object %s: %w", v.name, err)
	}
	return n, err
}

func (v *verifier) Close() error {
	v.dec.Close()
	return v.rc.Close()
}

// open returns a verifying reader of the object's uncompressed bytes.
func (l *loader) open(ctx context.Context, name string) (*verifier, error) {
	want, ok := l.objs[name]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: object %s is not in the manifest", l.m.ID, name)
	}
	key := catalog.SnapshotObjectKey(l.m.ID, name)
	rc, err := l.st.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("zstd decoder for %s: %w", key, err)
	}
	return &verifier{name: key, want: want, rc: rc, dec: dec, h: sha256.New()}, nil
}

// readAll reads a small object whole, verified.
func (l *loader) readAll(ctx context.Context, name string) ([]byte, error) {
	v, err := l.open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	b, err := io.ReadAll(io.LimitReader(v, maxLayoutSize))
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (l *loader) readJSON(ctx context.Context, name string, dst any) error {
	b, err := l.readAll(ctx, name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return fmt.Errorf("decode %s of snapshot %s: %w", name, l.m.ID, err)
	}
	return nil
}

// createTables creates the databases, the sequences, and the tables,
// whose columns may take their default from a sequence.
func (l *loader) createTables(ctx context.Context, c *sql.Conn, lay *layout) error {
	for _, db := range lay.Databases {
		if _, err := c.ExecContext(ctx, db.Create); err != nil {
			return fmt.Errorf("create database %s: %w", db.Name, err)
		}
	}
	for _, s := range lay.Sequences {
		if err := createSequence(ctx, c, s); err != nil {
			return err
		}
	}
	for i := range lay.Tables {
		t := &lay.Tables[i]
		create, err := l.readAll(ctx, t.SchemaObject)
		if err != nil {
			return err
		}
		if _, err := c.ExecContext(ctx, "USE "+quoteIdent(t.Schema)); err != nil {
			return fmt.Errorf("use %s: %w", t.Schema, err)
		}
		if _, err := c.ExecContext(ctx, string(create)); err != nil {
			return fmt.Errorf("create table %s.%s: %w", t.Schema, t.Name, err)
		}
		from := l.opts.pauseStatsFrom
		if from <= 0 {
			from = defaultPauseStatsFrom
		}
		var size int64
		for _, ch := range t.Chunks {
			size += l.objs[ch.Object].Size
		}
		if size < from {
			continue
		}
		if err := l.pauseStats(ctx, c, i, t); err != nil {
			return err
		}
	}
	return nil
}

// statsRecalcRe finds a table's own STATS_AUTO_RECALC in CREATE_OPTIONS.
var statsRecalcRe = regexp.MustCompile(`(?i)\bstats_auto_recalc=(\w+)`)

// pauseStats stops InnoDB from recalculating the statistics of table i
// while it loads (tables from defaultPauseStatsFrom up). Otherwise its background thread recalculates them
// again and again as the table grows, which took 39% of the server's CPU
// (MariaDB 10.11, 8 tables of 1M rows loading two at a time: 64 s of
// server CPU instead of 39). Partitioned tables and other
// engines are left alone, as changing their options may copy them.
func (l *loader) pauseStats(ctx context.Context, c *sql.Conn, i int, t *tableDef) error {
	var engine, options sql.NullString
	err := c.QueryRowContext(ctx, "SELECT ENGINE, CREATE_OPTIONS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
		t.Schema, t.Name).Scan(&engine, &options)
	if err != nil {
		return fmt.Errorf("read options of %s.%s: %w", t.Schema, t.Name, err)
	}
	if !strings.EqualFold(engine.String, "InnoDB") || strings.Contains(strings.ToLower(options.String), "partitioned") {
		return nil
	}
	restore := "DEFAULT"
	if m := statsRecalcRe.FindStringSubmatch(options.String); m != nil {
		restore = m[1]
	}
	if _, err := c.ExecContext(ctx, "ALTER TABLE "+quoteTable(t.Schema, t.Name)+" STATS_AUTO_RECALC = 0"); err != nil {
		return fmt.Errorf("pause statistics of %s.%s: %w", t.Schema, t.Name, err)
	}
	l.statsRecalc[i] = restore
	return nil
}

// resumeStats calculates the statistics of loaded table i once and gives
// it back its STATS_AUTO_RECALC, if pauseStats took it.
func (l *loader) resumeStats(ctx context.Context, c *sql.Conn, i int, t *tableDef) error {
	restore, ok := l.statsRecalc[i]
	if !ok {
		return nil
	}
	name := quoteTable(t.Schema, t.Name)
	rows, err := c.QueryContext(ctx, "ANALYZE NO_WRITE_TO_BINLOG TABLE "+name)
	if err != nil {
		return fmt.Errorf("analyze %s.%s: %w", t.Schema, t.Name, err)
	}
	rows.Close()
	if _, err := c.ExecContext(ctx, "ALTER TABLE "+name+" STATS_AUTO_RECALC = "+restore); err != nil {
		return fmt.Errorf("restore STATS_AUTO_RECALC of %s.%s: %w", t.Schema, t.Name, err)
	}
	return nil
}

// loadStatement is the LOAD DATA statement of a table, for reader name.
func loadStatement(t *tableDef, reader string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "LOAD DATA LOCAL INFILE 'Reader::%s' INTO TABLE %s %s (", reader, quoteTable(t.Schema, t.Name), loadDataFormat)
	var sets []string
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		if c.Encoding == "" {
			b.WriteString(quoteIdent(c.Name))
			continue
		}
		v := fmt.Sprintf("@c%d", i)
		b.WriteString(v)
		var expr string
		switch c.Encoding {
		case encodingBit:
			expr = "CAST(" + v + " AS UNSIGNED)"
		case encodingJSON:
			expr = "CONVERT(" + v + " USING utf8mb4)"
		default:
			expr = v
		}
		sets = append(sets, quoteIdent(c.Name)+" = "+expr)
	}
	b.WriteString(")")
	if len(sets) > 0 {
		b.WriteString(" SET " + strings.Join(sets, ", "))
	}
	return b.String()
}

// loadData loads every chunk, in parallel.
func (l *loader) loadData(ctx context.Context, first *sql.Conn, lay *layout) error {
	tableBytes := make([]int64, len(lay.Tables))
	for i, t := range lay.Tables {
		l.progress.TablesTotal++
		l.progress.ChunksTotal += len(t.Chunks)
		for _, ch := range t.Chunks {
			tableBytes[i] += l.objs[ch.Object].Size
		}
		l.progress.BytesTotal += tableBytes[i]
		l.tableDue[i] = len(t.Chunks)
	}
	// A worker loads a whole table, its chunks in key order; the workers
	// take different tables, largest first. InnoDB loads two chunks of one
	// table at once slower than one after the other (both append at the
	// primary key's right edge and contend for its pages), while different
	// tables load side by side.
	order := make([]int, len(lay.Tables))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(tableBytes[b], tableBytes[a]) })
	jobs := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for _, i := range order {
			select {
			case jobs <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for w := range l.opts.Threads {
		g.Go(func() error {
			c := first
			if w > 0 {
				var err error
				if c, err = l.sessionConn(gctx); err != nil {
					return err
				}
				defer c.Close()
			}
			for ti := range jobs {
				t := &lay.Tables[ti]
				if l.wholeTables {
					if err := l.loadTable(gctx, c, ti, t); err != nil {
						return fmt.Errorf("load %s.%s: %w", t.Schema, t.Name, err)
					}
				} else {
					for ci, ch := range t.Chunks {
						if err := l.loadChunk(gctx, c, t, ch); err != nil {
							return fmt.Errorf("load %s.%s chunk %d: %w", t.Schema, t.Name, ci+1, err)
						}
						l.chunkDone(ti, ch)
					}
				}
				if err := l.resumeStats(gctx, c, ti, t); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// loadChunk loads one chunk in a transaction that commits only if the
// object verified and the server took every row without a warning.
func (l *loader) loadChunk(ctx context.Context, c *sql.Conn, t *tableDef, ch chunkDef) error {
	v, err := l.open(ctx, ch.Object)
	if err != nil {
		return err
	}
	defer v.Close()
	return l.loadFrom(ctx, c, t, v, ch.Rows)
}

// loadTable loads all chunks of table ti with one statement, in a
// transaction that commits only if every object verified and the server
// took every row without a warning.
func (l *loader) loadTable(ctx context.Context, c *sql.Conn, ti int, t *tableDef) error {
	r := &tableReader{l: l, ctx: ctx, ti: ti, t: t}
	defer r.Close()
	var rows int64
	for _, ch := range t.Chunks {
		rows += ch.Rows
	}
	return l.loadFrom(ctx, c, t, r, rows)
}

// loadFrom runs LOAD DATA of table t from r in a transaction, and commits
// it only if r ended without an error (an object that fails verification
// ends it with one) and the server loaded exactly rows rows without a
// warning.
func (l *loader) loadFrom(ctx context.Context, c *sql.Conn, t *tableDef, r io.Reader, rows int64) (err error) {
	name := fmt.Sprintf("mysql-pitr-%s-%d", l.m.ID, loadSeq.Add(1))
	mysql.RegisterReaderHandler(name, func() io.Reader { return r })
	defer mysql.DeregisterReaderHandler(name)

	if _, err := c.ExecContext(ctx, "START TRANSACTION"); err != nil {
		return fmt.Errorf("start transaction: %w", err)
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, rerr := c.ExecContext(rctx, "ROLLBACK"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	res, err := c.ExecContext(ctx, loadStatement(t, name))
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	var warnings int
	if err := c.QueryRowContext(ctx, "SELECT @@warning_count").Scan(&warnings); err != nil {
		return fmt.Errorf("read warning count: %w", err)
	}
	if warnings > 0 {
		return fmt.Errorf("server reported %d warnings: %s", warnings, firstWarnings(ctx, c))
	}
	if n != rows {
		return fmt.Errorf("server loaded %d rows, the snapshot holds %d", n, rows)
	}
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// tableReader reads a table's chunks one after the other, each verified,
// and counts a chunk as done when its last byte has been read.
type tableReader struct {
	l   *loader
	ctx context.Context
	ti  int
	t   *tableDef

	next int
	cur  *verifier
}

func (r *tableReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if r.next == len(r.t.Chunks) {
				return 0, io.EOF
			}
			v, err := r.l.open(r.ctx, r.t.Chunks[r.next].Object)
			if err != nil {
				return 0, err
			}
			r.cur = v
		}
		n, err := r.cur.Read(p)
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			r.l.chunkDone(r.ti, r.t.Chunks[r.next])
			r.next++
			if n == 0 {
				continue
			}
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("chunk %d: %w", r.next+1, err)
		}
		return n, nil
	}
}

func (r *tableReader) Close() error {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	return nil
}

// firstWarnings describes the first warnings of the last statement.
func firstWarnings(ctx context.Context, c *sql.Conn) string {
	rows, err := c.QueryContext(ctx, "SHOW WARNINGS LIMIT 3")
	if err != nil {
		return "(show warnings: " + err.Error() + ")"
	}
	defer rows.Close()
	var b bytes.Buffer
	for rows.Next() {
		var level, msg string
		var code int
		if rows.Scan(&level, &code, &msg) == nil {
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%s %d: %s", level, code, msg)
		}
	}
	return b.String()
}

func (l *loader) chunkDone(t int, ch chunkDef) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.progress.ChunksDone++
	l.progress.Rows += ch.Rows
	o := l.objs[ch.Object]
	l.progress.Bytes += o.Size
	l.progress.StoredBytes += o.StoredSize
	l.tableDue[t]--
	if l.tableDue[t] == 0 {
		l.progress.TablesDone++
	}
	if l.opts.Progress != nil {
		l.opts.Progress(l.progress)
	}
}
