package snapshot

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

func TestAppendRow(t *testing.T) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	tests := []struct {
		name string
		row  [][]byte
		want string
	}{
		{"plain", [][]byte{[]byte("a"), []byte("b c")}, "a\tb c\n"},
		{"null and empty", [][]byte{nil, {}}, "\\N\t\n"},
		{"escapes", [][]byte{[]byte("\\\t\n\r\x00")}, `\\\t\n\r\0` + "\n"},
		{"literal backslash N", [][]byte{[]byte(`\N`)}, `\\N` + "\n"},
		{"word NULL", [][]byte{[]byte("NULL")}, "NULL\n"},
		{"utf8mb4", [][]byte{[]byte("😀 ünï")}, "😀 ünï\n"},
		{"ctrl-z stays", [][]byte{{0x1a}}, "\x1a\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendRow(nil, tt.row))
			if got != tt.want {
				t.Errorf("appendRow = %q, want %q", got, tt.want)
			}
			back, err := parseRows([]byte(got))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, [][][]byte{tt.row}) {
				t.Errorf("parseRows = %q, want %q", back, tt.row)
			}
		})
	}
	t.Run("every byte", func(t *testing.T) {
		row := [][]byte{every, nil, every[:0]}
		back, err := parseRows(appendRow(nil, row))
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != 1 || !bytes.Equal(back[0][0], every) || back[0][1] != nil || back[0][2] == nil || len(back[0][2]) != 0 {
			t.Errorf("parseRows = %q", back)
		}
	})
}

func FuzzAppendRow(f *testing.F) {
	f.Add([]byte("a\tb"), []byte{0, '\\', 'N'}, false)
	f.Add([]byte{}, []byte("\r\n"), true)
	f.Fuzz(func(t *testing.T, a, b []byte, null bool) {
		if a == nil {
			a = []byte{}
		}
		row := [][]byte{a, b}
		if null {
			row[1] = nil
		} else if b == nil {
			row[1] = []byte{}
		}
		back, err := parseRows(appendRow(nil, row))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, [][][]byte{row}) {
			t.Fatalf("round trip of %q = %q", row, back)
		}
	})
}

func TestObjectNames(t *testing.T) {
	tests := []struct {
		schema, table string
		want          string
	}{
		{"shop", "orders", "tables/shop/orders/data-000007.tsv.zst"},
		{"my db", "a/b", "tables/my%20db/a%2Fb/data-000007.tsv.zst"},
		{".", "..", "tables/%2E/%2E%2E/data-000007.tsv.zst"},
		{`back\slash`, "100%", "tables/back%5Cslash/100%25/data-000007.tsv.zst"},
		{"ünï", "😀", "tables/%C3%BCn%C3%AF/%F0%9F%98%80/data-000007.tsv.zst"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := tableDataObject(tt.schema, tt.table, 7)
			if got != tt.want {
				t.Errorf("tableDataObject(%q, %q) = %q, want %q", tt.schema, tt.table, got, tt.want)
			}
			if err := storage.ValidateKey("snapshots/x/" + got); err != nil {
				t.Error(err)
			}
		})
	}
}

func FuzzNameSegment(f *testing.F) {
	f.Add("a", "b")
	f.Add("..", "/")
	f.Fuzz(func(t *testing.T, schema, table string) {
		if schema == "" || table == "" {
			return
		}
		key := "snapshots/x/" + tableSchemaObject(schema, table)
		if len(key) > storage.MaxKeyLen {
			return
		}
		if err := storage.ValidateKey(key); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeyPredicate(t *testing.T) {
	key := []keyColumn{{name: "a", kind: literalNumber}, {name: "b", kind: literalString}}
	tests := []struct {
		name     string
		key      []keyColumn
		bound    []any
		op       string
		want     string
		wantArgs []any
	}{
		{"single", key[:1], []any{numberLiteral("5")}, ">=", "((`a` >= 5))", nil},
		{"composite lower", key, []any{numberLiteral("5"), "x"}, ">=", "((`a` > 5) OR (`a` = 5 AND `b` >= ?))", []any{"x"}},
		{"composite upper", key, []any{numberLiteral("5"), "x"}, "<", "((`a` < 5) OR (`a` = 5 AND `b` < ?))", []any{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, args := keyPredicate(tt.key, tt.bound, tt.op)
			if got != tt.want || !reflect.DeepEqual(args, tt.wantArgs) {
				t.Errorf("keyPredicate = %q %v, want %q %v", got, args, tt.want, tt.wantArgs)
			}
		})
	}
}

// TestAppendFieldEveryByte puts every byte value at every offset of fields
// long enough for the word-at-a-time scan, and checks appendField against
// escaping byte by byte.
func TestAppendFieldEveryByte(t *testing.T) {
	slow := func(v []byte) []byte {
		var out []byte
		for _, c := range v {
			switch c {
			case '\\':
				out = append(out, `\\`...)
			case '\t':
				out = append(out, `\t`...)
			case '\n':
				out = append(out, `\n`...)
			case '\r':
				out = append(out, `\r`...)
			case 0:
				out = append(out, `\0`...)
			default:
				out = append(out, c)
			}
		}
		return out
	}
	for _, fill := range []byte{'a', 0x0e, 0xff, 0x5b, 0x5d, 0x80} {
		for n := range 20 {
			for at := range n {
				for b := range 256 {
					v := bytes.Repeat([]byte{fill}, n)
					v[at] = byte(b)
					if got, want := appendField(nil, v), slow(v); !bytes.Equal(got, want) {
						t.Fatalf("appendField(%q) = %q, want %q", v, got, want)
					}
				}
			}
		}
	}
}
