package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

func runPs(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ps", "[--json]", stderr)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the list as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	c := localapi.NewClient(*socket)
	if *asJSON {
		b, err := c.Raw(context.Background(), "list", []byte("{}"))
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	l, err := c.List(context.Background())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tINDEX\tSTATE\tPID\tMEM/LIMIT\tCPU%\tDISK/LIMIT\tUPTIME")
	now := time.Now()
	for _, in := range l.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			in.ID, in.Name, in.Index, in.State, optInt(in.PID),
			ratio(in.Usage.MemoryBytes, in.Limits.MemoryBytes),
			optPct(in.Usage.CPUPct),
			ratio(in.Usage.DiskBytes, in.Limits.DiskBytes),
			uptime(in, now))
	}
	return tw.Flush()
}

func optInt(v *int) string {
	if v == nil {
		return "-"
	}
	return strconv.Itoa(*v)
}

func optPct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

// ratio prints "used/limit", "-" for an unknown use and "none" for no limit.
func ratio(used *uint64, limit *int64) string {
	u := "-"
	if used != nil {
		u = formatSize(*used)
	}
	l := "none"
	if limit != nil && *limit > 0 {
		l = formatSize(uint64(*limit))
	}
	return u + "/" + l
}

func uptime(in api.Instance, now time.Time) string {
	if in.StartedAt == nil || in.State.Terminal() {
		return "-"
	}
	return now.Sub(*in.StartedAt).Truncate(time.Second).String()
}
