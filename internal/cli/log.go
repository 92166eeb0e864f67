package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// LogFlags are --log-level and --log-format, which every command takes.
type LogFlags struct {
	level  string
	format string
}

// Register adds the flags to fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
}

// Validate refuses a level or format that is not one of the flags'.
func (l *LogFlags) Validate() error {
	_, err := l.Logger(io.Discard)
	return err
}

// Logger builds the logger writing to w; a bad level or format is a usage
// error.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, Usage(fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", l.level))
	}
	opts := &slog.HandlerOptions{Level: level}
	format := l.format
	if format == "auto" {
		format = "json"
		if IsTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usage(fmt.Errorf("--log-format: %q is not one of text, json, auto", l.format))
}
