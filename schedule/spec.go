package schedule

import (
	"fmt"
	"strings"

	"github.com/robfig/cron/v3"
)

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSpec parses a schedule: a standard 5-field cron expression
// ("0 3 * * *") or a descriptor ("@daily", "@every 6h"), in UTC unless it
// starts with CRON_TZ=Zone or TZ=Zone.
func ParseSpec(spec string) (sched cron.Schedule, err error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("schedule is empty")
	}
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		if !strings.Contains(spec, " ") {
			return nil, fmt.Errorf("schedule %q: a time zone must be followed by an expression, as in CRON_TZ=Europe/Berlin 0 3 * * *", spec)
		}
	} else {
		spec = "CRON_TZ=UTC " + spec
	}
	defer func() {
		// The parser has panicked on odd input before; a bad flag must not crash the agent.
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("%v", r)
		}
	}()
	return parser.Parse(spec)
}
