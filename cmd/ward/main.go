// Command ward is the per-host isolation agent (`ward agent`) and the CLI
// that drives it over its unix socket.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/hostward/ward/api"
)

// Exit codes of the contract.
const (
	exitOK      = 0
	exitRefused = 1 // the agent refused, or could not be reached
	exitUsage   = 2
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"agent":   {"run the daemon", runAgent},
	"run":     {"start an instance", runRun},
	"ps":      {"list instances", runPs},
	"info":    {"everything known about one instance", runInfo},
	"stop":    {"stop an instance and release what it held", runStop},
	"limit":   {"change a running instance's limits", runLimit},
	"top":     {"live table of instances and what they use", runTop},
	"events":  {"stream instance events", runEvents},
	"doctor":  {"check this host", runDoctor},
	"setup":   {"create the pool's group and users, apply the ACL deny list", runSetup},
	"version": {"print version information", runVersion},
}

// usageError is bad usage: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ward: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	err := cmd.run(args[1:], stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "ward %s: %v\n", args[0], err)
		return exitUsage
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		fmt.Fprintf(stderr, "ward %s: %s (%s)\n", args[0], ae.Error(), ae.Code)
	} else {
		fmt.Fprintf(stderr, "ward %s: %v\n", args[0], err)
	}
	return exitRefused
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ward <command> [flags]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'ward <command> -h' for a command's flags.")
}

// newFlags returns a flag set whose errors are usage errors and whose help
// goes to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ward "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ward %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning flag errors into usage errors. Flags may come
// before or after positional arguments; everything after a "--" is
// positional, verbatim (a command line for `ward run`).
func parse(fs *flag.FlagSet, args []string) error {
	var tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return fs.Parse(append(append([]string{"--"}, pos...), tail...))
}

// socketFlag adds --socket, defaulting to $WARD_SOCKET or the contract's path.
func socketFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("WARD_SOCKET")
	if def == "" {
		def = "/run/ward/ward.sock"
	}
	return fs.String("socket", def, "agent socket (env WARD_SOCKET)")
}
