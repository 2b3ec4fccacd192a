package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func runRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "[--name N] [flags] -- CMD ARGS...", stderr)
	socket := socketFlag(fs)
	name := fs.String("name", "", "application name (default: the program's file name)")
	index := fs.Int("index", 0, "instance index")
	id := fs.String("id", "", "instance id (default: generated); a repeated id returns the existing instance")
	port := fs.String("port", "", `"auto" to allocate a port (given as $PORT), or a port in the configured range`)
	health := fs.String("health", "", `health check: "tcp" or "http:/path"`)
	asJSON := fs.Bool("json", false, "print the instance as JSON")
	var routes, env multiFlag
	fs.Var(&routes, "route", "route (hostname) to register; repeatable")
	fs.Var(&env, "env", "KEY=VALUE for the instance's environment; repeatable")
	limits := limitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("no command given: ward run [--name N] -- CMD ARGS...")
	}
	if *name == "" {
		*name = defaultName(fs.Arg(0))
	}
	req := api.Request{ID: *id, Name: *name, Index: *index, Command: fs.Args(), Limits: limits(), Routes: routes}
	switch *port {
	case "":
	case "auto", "0":
		req.Port = new(int)
	default:
		p, err := strconv.Atoi(*port)
		if err != nil {
			return usagef("--port: want \"auto\" or a number, got %q", *port)
		}
		req.Port = &p
	}
	if *health != "" {
		hc := &api.HealthCheck{Type: *health}
		if p, ok := strings.CutPrefix(*health, "http:"); ok {
			hc.Type, hc.Path = "http", p
		}
		req.HealthCheck = hc
	}
	if len(env) > 0 {
		req.Env = map[string]string{}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return usagef("--env: want KEY=VALUE, got %q", kv)
			}
			req.Env[k] = v
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	b, err := localapi.NewClient(*socket).Raw(context.Background(), "start", body)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(b)
		return err
	}
	var inst api.Instance
	if err := json.Unmarshal(b, &inst); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", inst.ID)
	return nil
}

// defaultName derives an instance name from the program: "sleep" for
// "/bin/sleep", with anything the contract does not allow in a name
// replaced, so `ward run -- sleep 100` just works.
func defaultName(prog string) string {
	base := prog[strings.LastIndexByte(prog, '/')+1:]
	b := []byte(base)
	for i, c := range b {
		ok := c == '_' || c == '-' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			b[i] = '_'
		}
	}
	n := strings.TrimLeft(string(b), ".")
	if n == "" {
		n = "app"
	}
	if len(n) > 64 {
		n = n[:64]
	}
	return n
}
