package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

func runStop(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stop", "ID [--timeout 10s]", stderr)
	socket := socketFlag(fs)
	timeout := fs.Duration("timeout", -1, "grace between SIGTERM and SIGKILL (default: the agent's stop.timeout)")
	asJSON := fs.Bool("json", false, "print the final instance as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one instance ID")
	}
	req := api.StopRequest{ID: fs.Arg(0)}
	if *timeout >= 0 {
		ms := timeout.Milliseconds()
		req.TimeoutMS = &ms
	}
	body, _ := json.Marshal(req)
	b, err := localapi.NewClient(*socket).Raw(context.Background(), "stop", body)
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
	fmt.Fprintf(stdout, "%s %s\n", in.ID, in.State)
	return nil
}
