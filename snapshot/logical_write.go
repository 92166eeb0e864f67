package snapshot

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// countWriter counts bytes.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// putObject stores what fill writes as the zstd-compressed object name,
// streaming it through a pipe into storage, so memory stays bounded
// whatever its size. It is create-only. If fill fails the object is not
// stored.
func (d *dumper) putObject(ctx context.Context, name string, fill func(w io.Writer) error) (catalog.SnapshotObject, error) {
	obj := catalog.SnapshotObject{Name: name}
	key := catalog.SnapshotObjectKey(d.id, name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type result struct {
		info storage.ObjectInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := d.opts.Storage.Put(ctx, key, pr, storage.PutOptions{IfNotExists: true})
		if err == nil {
			err = errors.New("storage finished before the object was complete")
			if _, rerr := pr.Read(make([]byte, 1)); rerr == io.EOF {
				err = nil
			}
		}
		// Unblocks a writer still writing after Put returned.
		pr.CloseWithError(err)
		done <- result{info, err}
	}()
	// No frame checksum: the manifest's SHA-256 of the content, checked
	// by every reader, already covers it.
	enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(false))
	if err != nil {
		pw.CloseWithError(err)
		<-done
		return obj, fmt.Errorf("zstd encoder: %w", err)
	}
	h := sha256.New()
	var cw countWriter
	bw := bufio.NewWriterSize(io.MultiWriter(h, &cw, enc), 256<<10)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = enc.Close()
	}
	if err != nil {
		cancel()
		pw.CloseWithError(err)
		r := <-done
		if r.err != nil && !errors.Is(r.err, err) && !errors.Is(r.err, context.Canceled) {
			err = errors.Join(err, r.err)
		}
		return obj, fmt.Errorf("write %s: %w", key, err)
	}
	pw.Close()
	r := <-done
	if r.err != nil {
		return obj, fmt.Errorf("store %s: %w", key, r.err)
	}
	obj.Size = cw.n
	obj.StoredSize = r.info.Size
	obj.SHA256 = hex.EncodeToString(h.Sum(nil))
	return obj, nil
}

// putBytes stores b as the object name.
func (d *dumper) putBytes(ctx context.Context, name string, b []byte) (catalog.SnapshotObject, error) {
	return d.putObject(ctx, name, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// putJSON stores v as indented JSON.
func (d *dumper) putJSON(ctx context.Context, name string, v any) (catalog.SnapshotObject, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return catalog.SnapshotObject{}, fmt.Errorf("encode %s: %w", name, err)
	}
	return d.putBytes(ctx, name, append(b, '\n'))
}

// dumpChunk streams one chunk's rows from the worker's transaction into its object.
func (d *dumper) dumpChunk(ctx context.Context, w *sql.Conn, t *tablePlan, i int) error {
	c := t.chunks[i]
	q := "SELECT " + t.selectList + " FROM " + quoteTable(t.def.Schema, t.def.Name)
	var args []any
	var preds []string
	if c.lower != nil {
		p, a := keyPredicate(t.key, c.lower, ">=")
		preds, args = append(preds, p), append(args, a...)
	}
	if c.upper != nil {
		p, a := keyPredicate(t.key, c.upper, "<")
		preds, args = append(preds, p), append(args, a...)
	}
	for j, p := range preds {
		if j == 0 {
			q += " WHERE " + p
		} else {
			q += " AND " + p
		}
	}
	nargs := make([]driver.NamedValue, len(args))
	for j, a := range args {
		nargs[j] = driver.NamedValue{Ordinal: j + 1, Value: a}
	}
	var dig rowDigest
	obj, err := d.putObject(ctx, c.object, func(out io.Writer) error {
		return queryRows(ctx, w, q, nargs, func(line []byte) error {
			dig.add(line)
			_, err := out.Write(line)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("dump %s.%s chunk %d: %w", t.def.Schema, t.def.Name, i+1, err)
	}
	c.digest = dig
	d.chunkDone(t, dig.rows, obj)
	return nil
}
