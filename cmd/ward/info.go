package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

func runInfo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("info", "ID [--json]", stderr)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the instance as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one instance ID")
	}
	body, _ := json.Marshal(api.InfoRequest{ID: fs.Arg(0)})
	b, err := localapi.NewClient(*socket).Raw(context.Background(), "info", body)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(b)
		return err
	}
	var in api.Instance
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	printInstance(stdout, &in)
	return nil
}

func printInstance(w io.Writer, in *api.Instance) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", in.ID)
	row("name", fmt.Sprintf("%s (index %d)", in.Name, in.Index))
	row("state", string(in.State))
	if in.Reason != "" {
		row("reason", in.Reason)
	}
	row("pid", optInt(in.PID))
	row("uid", optInt(in.UID))
	row("port", optInt(in.Port))
	row("command", strings.Join(in.Command, " "))
	row("cgroup", in.Cgroup)
	row("dir", in.Dir)
	if len(in.Routes) > 0 {
		row("routes", strings.Join(in.Routes, ", "))
	}
	row("memory", ratio(in.Usage.MemoryBytes, in.Limits.MemoryBytes))
	row("swap", limitStr(in.Limits.SwapBytes, true))
	row("cpu", fmt.Sprintf("%s%% now, shares %s, cap %s", optPct(in.Usage.CPUPct), limitStr(in.Limits.CPUShares, false), millicores(in.Limits.CPUMillicores)))
	row("pids", fmt.Sprintf("%s/%s", optU(in.Usage.Pids), limitStr(in.Limits.Pids, false)))
	row("disk", ratio(in.Usage.DiskBytes, in.Limits.DiskBytes))
	if in.Health != nil {
		row("health", *in.Health)
	}
	row("created", in.CreatedAt.Format(time.RFC3339))
	row("started", optTime(in.StartedAt))
	row("exited", optTime(in.ExitedAt))
	exit := optInt(in.ExitCode)
	if in.ExitSignal != "" {
		exit = "signal " + in.ExitSignal
	}
	row("exit", exit)
	tw.Flush()
}

func optU(v *uint64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprint(*v)
}

func optTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func limitStr(v *int64, bytes bool) string {
	if v == nil {
		return "-"
	}
	if bytes {
		return formatSize(uint64(*v))
	}
	return fmt.Sprint(*v)
}

func millicores(v *int64) string {
	if v == nil || *v == 0 {
		return "none"
	}
	return fmt.Sprintf("%g cores", float64(*v)/1000)
}
