package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

func runLimit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("limit", "ID [--memory 512M] [--swap ...] [--cpu-shares N] [--cpus 1.5] [--pids N] [--disk 2G]", stderr)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the instance as JSON")
	limits := limitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one instance ID")
	}
	req := api.LimitRequest{ID: fs.Arg(0), Limits: limits()}
	if req.Limits == (api.Limits{}) {
		return usagef("no limit given")
	}
	body, _ := json.Marshal(req)
	b, err := localapi.NewClient(*socket).Raw(context.Background(), "limit", body)
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
	fmt.Fprintf(stdout, "%s limits: memory %s, swap %s, cpu shares %s, cpu cap %s, pids %s, disk %s\n", in.ID,
		limitStr(in.Limits.MemoryBytes, true), limitStr(in.Limits.SwapBytes, true), limitStr(in.Limits.CPUShares, false),
		millicores(in.Limits.CPUMillicores), limitStr(in.Limits.Pids, false), limitStr(in.Limits.DiskBytes, true))
	return nil
}
