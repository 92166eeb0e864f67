package binlog

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// TestStreamerEncryptedWithoutIdentity archives into an encrypted store
// through a streamer that holds only the public recipient, under puts that
// break off and acknowledgements that are lost (so uploads find their own
// earlier objects), across restarts: with its spool, it continues the same
// timeline; with a fresh spool it cannot prove continuity and starts a new
// timeline, recorded as such. A reader with the identity finds the archive
// byte-identical to the server's binlog.
func TestStreamerEncryptedWithoutIdentity(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	faulty := storagetest.NewFaulty(inner, 11, storagetest.Faults{PutErrRate: 0.2, PutAckLossRate: 0.3})
	writer, err := crypt.New(faulty, crypt.Options{Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := crypt.New(inner, crypt.Options{Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v BLOB)")
	write := func(n int) {
		for range n {
			b := make([]byte, 500)
			rand.Read(b)
			db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", b)
		}
	}
	run := func(spool string, between func()) {
		s := newStreamer(t, db, writer, spool)
		s.RetryMax = 200 * time.Millisecond
		s.Uploader().RetryMax = 200 * time.Millisecond
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		between()
		waitDurable(t, s, serverEnd(t, db), 60*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	timelines := func() []*catalog.TimelineState {
		t.Helper()
		arch, err := catalog.Load(t.Context(), reader, catalog.LoadOptions{})
		if err != nil {
			t.Fatalf("load the archive with the identity: %v", err)
		}
		return arch.Timelines
	}

	spool := t.TempDir()
	run(spool, func() { write(50); db.Exec(t, "FLUSH BINARY LOGS"); write(50) })
	run(spool, func() { write(50) }) // restarted with its spool
	if tls := timelines(); len(tls) != 1 {
		t.Fatalf("after a restart with the spool: %d timelines, want 1", len(tls))
	}
	compareWithServer(t, reader, db)
	if faulty.Injected() == 0 {
		t.Fatal("no fault was injected: the retries were not exercised")
	}

	// Every object is an age file; the writer cannot read any back.
	objs, err := inner.List(t.Context(), catalog.BinlogPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		enc, err := crypt.IsEncrypted(t.Context(), inner, o.Key)
		if err != nil || !enc {
			t.Errorf("%s: encrypted %v, %v", o.Key, enc, err)
		}
	}
	if _, _, err := catalog.LoadTail(t.Context(), writer); !errors.Is(err, crypt.ErrNoIdentity) {
		t.Errorf("the writer read the archive's tail: %v, want ErrNoIdentity", err)
	}

	run(t.TempDir(), func() { write(20) }) // a fresh spool: nothing proves continuity
	tls := timelines()
	if len(tls) != 2 || tls[1].Reason != catalog.ReasonUnverified {
		t.Fatalf("after a restart with a fresh spool: %d timelines, the last %+v; want a second, unverified one", len(tls), tls[len(tls)-1].Timeline)
	}
	compareWithServer(t, reader, db)
	t.Logf("%d faults injected", faulty.Injected())
}

// TestEncryptedRestoreMarkerWithFreshSpool: a restored server whose agent
// holds no identity and no spool (a recreated pod) starts one unverified
// timeline that records the restore; restarting with that spool starts no
// further "restored" timeline for the same marker.
func TestEncryptedRestoreMarkerWithFreshSpool(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	inner, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writer, err := crypt.New(inner, crypt.Options{Recipients: []age.Recipient{id.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := crypt.New(inner, crypt.Options{Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "mysql-pitr-restore.json")
	run := func(spool string) {
		s := newStreamer(t, db, writer, spool)
		s.RestoreMarker = marker
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		db.Exec(t, "CREATE TABLE IF NOT EXISTS mysql.pitr_probe (id INT PRIMARY KEY AUTO_INCREMENT)")
		db.Exec(t, "INSERT INTO mysql.pitr_probe VALUES ()")
		waitDurable(t, s, serverEnd(t, db), 60*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run(t.TempDir())
	os.WriteFile(marker, []byte(`{"id": "r1", "target": "2026-11-27T10:41:07Z"}`), 0o644)
	spool := t.TempDir()
	run(spool)
	run(spool)
	arch, err := catalog.Load(t.Context(), reader, catalog.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tls := arch.Timelines
	if len(tls) != 2 || tls[1].RestoreID != "r1" {
		t.Fatalf("want a second timeline recording restore r1 and no third; got %d, the last %+v", len(tls), tls[len(tls)-1].Timeline)
	}
}
