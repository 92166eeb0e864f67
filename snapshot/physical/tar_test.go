package physical

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// TestTreeRoundTrip writes a directory as a tar stream, leaving out what
// the skip function names, and unpacks it elsewhere: the same files with
// the same bytes and modes.
func TestTreeRoundTrip(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{
		"ibdata1":                    strings.Repeat("page", 5000),
		"#innodb_redo/#ib_redo7":     "redo",
		"#innodb_redo/#ib_redo8_tmp": "spare",
		"bank/accounts.ibd":          "rows",
		"auto.cnf":                   "[auto]\nserver-uuid=x\n",
		"empty":                      "",
	}
	for name, body := range files {
		p := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := writeTree(t.Context(), src, &buf, cloneTransient)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("wrote %d files, want 4 (auto.cnf and the spare redo file left out)", n)
	}
	dst := t.TempDir()
	if err := extractTree(t.Context(), &buf, dst); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		got, err := os.ReadFile(filepath.Join(dst, filepath.FromSlash(name)))
		skipped := cloneTransient(name, nil)
		switch {
		case skipped && err == nil:
			t.Errorf("%s was copied", name)
		case !skipped && (err != nil || string(got) != body):
			t.Errorf("%s: %q, %v; want %q", name, got, err, body)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "emptydir")); err != nil || !fi.IsDir() {
		t.Errorf("emptydir: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "ibdata1")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("ibdata1 mode: %v %v", fi.Mode(), err)
	}
}

// TestExtractTreeRefuses checks that a stream cannot write outside the
// directory, nor anything but directories and regular files.
func TestExtractTreeRefuses(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
	}{
		{"parent", tar.Header{Typeflag: tar.TypeReg, Name: "../evil"}},
		{"deep parent", tar.Header{Typeflag: tar.TypeReg, Name: "a/../../evil"}},
		{"absolute", tar.Header{Typeflag: tar.TypeReg, Name: "/etc/evil"}},
		{"symlink", tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc"}},
		{"hard link", tar.Header{Typeflag: tar.TypeLink, Name: "link", Linkname: "ibdata1"}},
		{"device", tar.Header{Typeflag: tar.TypeChar, Name: "dev"}},
		{"dot", tar.Header{Typeflag: tar.TypeDir, Name: "./"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			h := tt.hdr
			h.Mode = 0o640
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			parent := t.TempDir()
			dir := filepath.Join(parent, "d")
			os.Mkdir(dir, 0o750)
			if err := extractTree(t.Context(), &buf, dir); err == nil {
				t.Fatalf("extracted %q", tt.hdr.Name)
			}
			var found []string
			filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
				if p != parent && p != dir {
					found = append(found, p)
				}
				return nil
			})
			if len(found) > 0 {
				t.Errorf("left %v", found)
			}
		})
	}
}

func TestParseCloneStatus(t *testing.T) {
	tests := []struct {
		name, in string
		want     cloneStatus
		wantErr  string
	}{
		{name: "recovered", in: "2 1\n1796630725776198 1796630726941523\nLOCAL INSTANCE\n0\n\n./binlog.000001\n14360\nf17a01cc-f214-11f1-a318-02fc00000001:1-52\n",
			want: cloneStatus{Binlog: catalog.Position{File: "binlog.000001", Pos: 14360}, GTID: "f17a01cc-f214-11f1-a318-02fc00000001:1-52"}},
		{name: "binlog elsewhere, two GTID sources", in: "2 1\n1 2\nLOCAL INSTANCE\n0\n\n/var/log/mysql/mysql-bin.000042\n4\naaaaaaaa-f214-11f1-a318-02fc00000001:1-5,\nbbbbbbbb-f214-11f1-a318-02fc00000001:1-7\n",
			want: cloneStatus{Binlog: catalog.Position{File: "mysql-bin.000042", Pos: 4}, GTID: "aaaaaaaa-f214-11f1-a318-02fc00000001:1-5,bbbbbbbb-f214-11f1-a318-02fc00000001:1-7"}},
		{name: "not started yet", in: "2 1\n1796630698879388 1796630699130531\nLOCAL INSTANCE\n0\n\n\n0\n\n", wantErr: "no binlog position"},
		{name: "failed clone", in: "2 1\n1 2\nLOCAL INSTANCE\n3862\nClone Donor Error\n\n0\n\n", wantErr: "error 3862"},
		{name: "garbage", in: "hello", wantErr: "not the clone plugin's status"},
		{name: "bad position", in: "2 1\n1 2\nLOCAL INSTANCE\n0\n\nbinlog.000001\nx\n\n", wantErr: "binlog position"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCloneStatus(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseCloneStatus(f *testing.F) {
	f.Add("2 1\n1 2\nLOCAL INSTANCE\n0\n\n./binlog.000001\n14360\nuuid:1-52\n")
	f.Add("2 1\n1 2\nLOCAL INSTANCE\n0\n\n\n0\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		cs, err := parseCloneStatus(s)
		if err == nil && (cs.Binlog.File == "" || strings.ContainsAny(cs.GTID, " \n\t")) {
			t.Fatalf("accepted %q as %+v", s, cs)
		}
	})
}

func TestPhysFormatOf(t *testing.T) {
	m := func(names ...string) *catalog.Manifest {
		mf := &catalog.Manifest{ID: "x"}
		for _, n := range names {
			mf.Objects = append(mf.Objects, catalog.SnapshotObject{Name: n})
		}
		return mf
	}
	tests := []struct {
		m    *catalog.Manifest
		want streamFormat
	}{
		{m(xbstreamPart(1), xbstreamPart(2)), formatXbstream},
		{m(formatTar.partName(1)), formatTar},
		{m(formatTar.partName(1), xbstreamPart(2)), ""},
		{m(formatTar.partName(2)), ""},
		{m("other"), ""},
	}
	for _, tt := range tests {
		got, err := formatOf(tt.m)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("%v: %q, %v; want %q", tt.m.Objects, got, err, tt.want)
		}
		// Only a clone's tar is restored without the backup tool.
		if need := NeedsTool(tt.m); need != (tt.want != formatTar) {
			t.Errorf("%v: NeedsTool = %v", tt.m.Objects, need)
		}
	}
}
