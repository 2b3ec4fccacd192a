package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

func runEvents(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("events", "[--json]", stderr)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "one JSON event per line")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return localapi.NewClient(*socket).Events(ctx, func(e api.Event, raw []byte) error {
		if *asJSON {
			_, err := fmt.Fprintf(stdout, "%s\n", raw)
			return err
		}
		exit := ""
		if e.ExitCode != nil {
			exit = fmt.Sprintf(" exit=%d", *e.ExitCode)
		}
		_, err := fmt.Fprintf(stdout, "%s #%d %-13s %s %s/%d%s %s\n", e.Time.Local().Format(time.TimeOnly), e.Seq, e.Kind, e.ID, e.Name, e.Index, exit, e.Reason)
		return err
	})
}
