package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeAgent serves /readyz and /status as an agent does.
func fakeAgent(t *testing.T, ready bool, status string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			http.Error(w, "not streaming yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, status)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestStatusCommand(t *testing.T) {
	streaming := `{"ready": true, "binlog": {"connected": true, "flavor": "mariadb", "server_version": "11.8.3",
		"durable_timeline": 2, "durable": {"file": "binlog.000003", "pos": 1234}, "lag_seconds": 0.4},
		"snapshots": {"schedule": "@every 1m", "last_success": "2026-11-27T10:41:07Z", "last_snapshot": "20261127T104100Z"}}`
	good := fakeAgent(t, true, streaming)
	notReady := fakeAgent(t, false, `{"ready": false}`)
	disconnected := fakeAgent(t, true, `{"ready": true, "binlog": {"connected": false, "last_error": "server is unreachable"}}`)
	behind := fakeAgent(t, true, `{"ready": true, "binlog": {"connected": true, "lag_seconds": 900}}`)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()

	tests := []struct {
		name    string
		urls    []string
		wantErr string
		want    []string
	}{
		{"a streaming agent", []string{good}, "",
			[]string{good + ": ok: streaming mariadb 11.8.3, timeline 000002, durable binlog.000003:1234, lag 0.4s", "last snapshot 20261127T104100Z at 2026-11-27T10:41:07Z"}},
		{"not ready", []string{good, notReady}, "1 of 2 agents",
			[]string{notReady + ": FAIL: /readyz answers 503: not streaming yet"}},
		{"not connected", []string{disconnected}, "1 of 1 agents",
			[]string{"FAIL: not connected to its server: server is unreachable"}},
		{"behind", []string{behind}, "1 of 1 agents",
			[]string{"FAIL: the archive lags the server by 900s (more than --max-lag 5m0s)"}},
		{"unreachable", []string{gone.URL}, "1 of 1 agents", []string{gone.URL + ": FAIL: Get"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(t.Context(), []string{"status", "--url", strings.Join(tc.urls, ",")}, &out, &errb)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("status: %v\n%s", err, out.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("status: %v, want an error with %q\n%s", err, tc.wantErr, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	t.Run("no url", func(t *testing.T) {
		var out, errb bytes.Buffer
		if err := run(t.Context(), []string{"status"}, &out, &errb); exitCode(err, &errb) != 2 {
			t.Errorf("status without --url: %v, want a usage error", err)
		}
	})
}
