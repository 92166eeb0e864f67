package main

import (
	"testing"
	"time"
)

func TestFormatting(t *testing.T) {
	tests := []struct{ got, want string }{
		{ms(754 * time.Microsecond), "0.75 ms"},
		{ms(120 * time.Millisecond), "120 ms"},
		{cell("mariadb-dump | zstd"), `mariadb-dump \| zstd`},
		{slug("mariadb-dump | zstd"), "mariadb-dump-zstd"},
		{slug("mariadb < dump.sql"), "mariadb-dump-sql"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
