package chart_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestAckTurnsOnTheServersSide renders the chart with agent.ack for each
// flavor and starts a real server with the semi-synchronous lines of the
// rendered my.cnf: the server accepts them and waits AFTER_SYNC with the
// chart's timeout, the agent gets --ack, and the PrometheusRule alerts when
// RPO 0 is lost.
func TestAckTurnsOnTheServersSide(t *testing.T) {
	helmBinary(t)
	cases := []struct {
		flavor string
		server testbed.Flavor
		prefix string
	}{
		{"mariadb", testbed.MariaDB1011, "rpl_semi_sync_master_"},
		{"mariadb", testbed.MariaDB118, "rpl_semi_sync_master_"},
		{"mysql", testbed.MySQL97, "rpl_semi_sync_source_"},
	}
	for _, tc := range cases {
		if len(testbed.ServersAmong(t, tc.server)) == 0 {
			continue
		}
		t.Run(tc.server.String(), func(t *testing.T) {
			out, err := render(t, merge(baseValues(), map[string]any{
				"server":  map[string]any{"flavor": tc.flavor},
				"agent":   map[string]any{"ack": "durable-spool", "ackTimeoutMs": 7000},
				"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}},
			}))
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			r := decodeAll(t, out)
			pod := &r.statefulSets[0].Spec.Template.Spec
			if agent := container(pod.Containers, "mysql-pitr"); agent == nil || !slices.Contains(agent.Args, "--ack=durable-spool") {
				t.Errorf("the agent lacks --ack=durable-spool")
			}
			var alert bool
			for _, p := range r.rules {
				for _, g := range p.Spec.Groups {
					for _, rule := range g.Rules {
						alert = alert || rule.Alert == "MysqlPitrRPOZeroLost" && strings.Contains(rule.Expr, "mysqlpitr_semisync_rpo_zero")
					}
				}
			}
			if !alert {
				t.Error("no MysqlPitrRPOZeroLost alert on mysqlpitr_semisync_rpo_zero")
			}

			// The semi-synchronous lines, as command-line options.
			cnf := r.configMaps["db-mysql-pitr-config"].Data["my.cnf"]
			var args []string
			for _, m := range regexp.MustCompile(`(?m)^\s*((?:loose-)?rpl_semi_sync_\S+|plugin-load-add = semisync\S+)\s*=?\s*(\S*)$`).FindAllStringSubmatch(cnf, -1) {
				if strings.HasPrefix(m[1], "plugin-load-add") {
					args = append(args, "--"+strings.ReplaceAll(m[1], " = ", "="))
					continue
				}
				args = append(args, fmt.Sprintf("--%s=%s", m[1], m[2]))
			}
			if len(args) < 3 {
				t.Fatalf("my.cnf has %d semi-synchronous lines:\n%s", len(args), cnf)
			}
			db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: tc.server, ExtraArgs: args})
			want := map[string]string{"enabled": "1", "wait_point": "AFTER_SYNC", "timeout": "7000"}
			for name, v := range want {
				var got string
				if err := db.DB(t).QueryRowContext(t.Context(), "SELECT @@GLOBAL."+tc.prefix+name).Scan(&got); err != nil {
					t.Fatalf("%s%s: %v (options %v)", tc.prefix, name, err, args)
				}
				if got != v {
					t.Errorf("%s%s = %s, want %s", tc.prefix, name, got, v)
				}
			}
		})
	}
}

// TestFollowRendersTheFlag checks that agent.follow reaches the agent as
// --follow, in both modes, and that an entry without a port is refused.
func TestFollowRendersTheFlag(t *testing.T) {
	helmBinary(t)
	for _, mode := range []string{"full", "sidecar-only"} {
		values := merge(baseValues(), map[string]any{"mode": mode,
			"agent": map[string]any{"follow": []any{"db-1.db-headless:3306", "db-2.db-headless:3306"}}})
		if mode == "sidecar-only" {
			values = merge(values, map[string]any{
				"sidecarOnly": map[string]any{"statefulSetName": "db", "podSelector": map[string]any{"app": "db"}, "dataVolumeName": "datadir"},
				"server":      map[string]any{"rootPassword": map[string]any{"secretName": ""}}})
		}
		out, err := render(t, values)
		if err != nil {
			t.Fatalf("%s: helm template: %v\n%s", mode, err, out)
		}
		if !strings.Contains(out, "--follow=db-1.db-headless:3306,db-2.db-headless:3306") {
			t.Errorf("%s: the agent lacks --follow", mode)
		}
	}
	if out, err := render(t, merge(baseValues(), map[string]any{"agent": map[string]any{"follow": []any{"db-1.db-headless"}}})); err == nil {
		t.Errorf("a follow entry without a port was rendered:\n%s", out)
	}
}
