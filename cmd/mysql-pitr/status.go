package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/schedule"
)

// Defaults of mysql-pitr status.
const (
	DefaultStatusMaxLag  = 5 * time.Minute
	DefaultStatusTimeout = 10 * time.Second
)

// agentStatus is the part of an agent's /status that status judges.
type agentStatus struct {
	Ready     bool             `json:"ready"`
	Binlog    binlog.Status    `json:"binlog"`
	Snapshots *schedule.Status `json:"snapshots,omitempty"`
}

// statusOptions are the settings of `mysql-pitr status`, which asks
// running agents how they are, through their /readyz and /status: one line
// per agent, and an error unless each is ready, connected to its server and
// archiving within --max-lag. It is the chart's helm test.
type statusOptions struct {
	log     cli.LogFlags
	urls    cli.ListFlag
	maxLag  time.Duration
	timeout time.Duration
	output
}

func (o *statusOptions) register(fs *flag.FlagSet) {
	o.log.Register(fs)
	fs.Var(&o.urls, "url", "an agent's HTTP address (its --listen), e.g. http://db-mysql-pitr-0.db-mysql-pitr-headless:9097; repeatable, or comma-separated")
	fs.DurationVar(&o.maxLag, "max-lag", DefaultStatusMaxLag, "an agent whose archive lags its server by more than this fails")
	fs.DurationVar(&o.timeout, "timeout", DefaultStatusTimeout, "deadline of each request")
}

// validate names the first bad setting.
func (o *statusOptions) validate() error {
	if len(o.urls) == 0 {
		return cli.Usage(errors.New("status: give at least one --url"))
	}
	return o.log.Validate()
}

// run asks each agent and prints its line.
func (o *statusOptions) run(ctx context.Context) error {
	client := &http.Client{Timeout: o.timeout}
	failed := 0
	for _, u := range o.urls {
		u = strings.TrimSuffix(u, "/")
		line, err := agentLine(ctx, client, u, o.maxLag)
		if err != nil {
			failed++
			fmt.Fprintf(o.stdout, "%s: FAIL: %v\n", u, err)
			continue
		}
		fmt.Fprintf(o.stdout, "%s: ok: %s\n", u, line)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d agents are not ready, not streaming or behind", failed, len(o.urls))
	}
	return nil
}

// agentLine reads one agent's /readyz and /status and describes it, or
// says what is wrong.
func agentLine(ctx context.Context, client *http.Client, base string, maxLag time.Duration) (string, error) {
	ready, body, err := get(ctx, client, base+"/readyz")
	if err != nil {
		return "", err
	}
	if ready != http.StatusOK {
		return "", fmt.Errorf("/readyz answers %d: %s", ready, strings.TrimSpace(body))
	}
	code, body, err := get(ctx, client, base+"/status")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("/status answers %d", code)
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return "", fmt.Errorf("/status: %w", err)
	}
	b := st.Binlog
	switch {
	case !b.Connected:
		msg := "not connected to its server"
		if b.LastError != "" {
			msg += ": " + b.LastError
		}
		return "", errors.New(msg)
	case time.Duration(b.LagSeconds*float64(time.Second)) > maxLag:
		return "", fmt.Errorf("the archive lags the server by %.0fs (more than --max-lag %s)", b.LagSeconds, maxLag)
	}
	line := fmt.Sprintf("streaming %s %s, timeline %s, durable %s, lag %.1fs, spool %d B, gaps recorded %d",
		b.Flavor, b.ServerVersion, b.DurableTimeline, b.Durable, b.LagSeconds, b.SpoolBytes, b.GapsRecorded)
	if b.UploadError != "" {
		line += ", upload error: " + b.UploadError
	}
	if s := st.Snapshots; s != nil {
		switch {
		case !s.LastSuccess.IsZero():
			line += fmt.Sprintf(", last snapshot %s at %s", s.LastSnapshot, s.LastSuccess.UTC().Format(time.RFC3339))
		case s.Schedule != "":
			line += ", no snapshot yet (schedule " + s.Schedule + ")"
		}
		if s.ConsecutiveFailures > 0 {
			line += fmt.Sprintf(", %d failed snapshots in a row: %s", s.ConsecutiveFailures, s.LastError)
		}
	}
	return line, nil
}

func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}
