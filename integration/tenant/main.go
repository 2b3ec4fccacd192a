// Command tenant is the load program of ward's containment tests. Run as an
// instance, it does what a greedy or hostile tenant would — fork without
// end, fill its disk, poke at another instance, burn CPU, hog memory, run a
// command it may be denied — and prints what the kernel answered as JSON
// lines on stdout (the instance's logs/stdout.log), so that a test can check
// ward's isolation from inside an instance.
//
//	tenant forkbomb [-max N] [-child PATH]   fork/exec sleeping children until fork fails
//	tenant spawn -n N [-child PATH]          start N short children, count the successes
//	tenant fill [-dir D] [-max BYTES] [-sync=false] write 1 MiB chunks until an error
//	tenant probe [-dir D -pid P] [-self]     try to reach another instance's files and processes
//	tenant burn [-cpu N]                     spin on one core (pinned to CPU N) forever
//	tenant hog -mb N                         allocate and touch N MiB, keep it
//	tenant exec -- CMD [ARG...]              run CMD, report its exit status or errno
//
// Every subcommand also takes -await (wait for SIGUSR1 before acting, so a
// test can start it early and trigger it later) and -stay (stay alive after
// the result, until SIGTERM, so a test can inspect the instance). burn and
// hog always stay.
//
// Each line is one JSON object with at least "cmd", "phase", "pid" and
// "uid". A syscall's outcome is the errno's name ("EACCES"), or "" when it
// succeeded. The exit code is 0 when the subcommand ran, whatever it
// observed; 2 for bad usage; 1 when it could not do its job at all.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// The phases of a result line.
const (
	phaseAwaiting = "awaiting" // -await: ready for SIGUSR1
	phaseDone     = "done"     // the subcommand's result
)

type subcommand struct {
	summary string
	run     func(c *common, args []string) error
}

// usageError is bad usage: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	sc, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "tenant: unknown subcommand %q\n", name)
		usage()
		os.Exit(2)
	}
	c := &common{name: name}
	// Registered before anything is printed: a test signals only after it
	// has read a line, and SIGUSR1's default action would end the tenant.
	c.usr1 = make(chan os.Signal, 1)
	signal.Notify(c.usr1, syscall.SIGUSR1)
	c.term = make(chan os.Signal, 1)
	signal.Notify(c.term, syscall.SIGTERM, syscall.SIGINT)
	if err := sc.run(c, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "tenant %s: %v\n", name, err)
		var ue *usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func usage() {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(os.Stderr, "usage: tenant SUBCOMMAND [-await] [-stay] [flags]")
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", n, subcommands[n].summary)
	}
}

// common is what every subcommand shares: its name, the -await and -stay
// flags, and the signals it waits for.
type common struct {
	name        string
	await, stay bool
	out         string // -out: also append result lines here
	usr1, term  chan os.Signal
}

// flags returns a flag set for the subcommand with -await and -stay.
func (c *common) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("tenant "+c.name, flag.ContinueOnError)
	fs.BoolVar(&c.await, "await", false, "wait for SIGUSR1 before acting")
	fs.BoolVar(&c.stay, "stay", false, "stay alive after the result, until SIGTERM")
	fs.StringVar(&c.out, "out", "", "also append result lines to this file (stdout may be on a full quota)")
	return fs
}

// parse parses args; positional arguments are refused unless allowed.
func (c *common) parse(fs *flag.FlagSet, args []string, positional bool) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !positional && fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// begin announces readiness and waits for SIGUSR1 when -await was given.
func (c *common) begin() error {
	if !c.await {
		return nil
	}
	if err := c.emit(phaseAwaiting, struct{}{}); err != nil {
		return err
	}
	select {
	case <-c.usr1:
		return nil
	case <-c.term:
		os.Exit(0)
	}
	return nil
}

// end stays alive until SIGTERM when -stay was given (or always is true).
func (c *common) end(always bool) {
	if c.stay || always {
		<-c.term
	}
}

// done reports the result and, with -stay, waits for SIGTERM.
func (c *common) done(result any) error {
	if err := c.emit(phaseDone, result); err != nil {
		return err
	}
	c.end(false)
	return nil
}

// header is the part of every result line that says who wrote it.
type header struct {
	Cmd   string `json:"cmd"`
	Phase string `json:"phase"`
	PID   int    `json:"pid"`
	UID   int    `json:"uid"`
}

// emit writes one result line: the header's fields, then v's. The line
// goes out in one write, so lines never interleave in an O_APPEND log.
func (c *common) emit(phase string, v any) error {
	h, err := json.Marshal(header{Cmd: c.name, Phase: phase, PID: os.Getpid(), UID: os.Getuid()})
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	line := h
	if len(b) > 2 { // not "{}": splice v's fields into the header's object
		line = append(h[:len(h)-1], ',')
		line = append(line, b[1:]...)
	}
	line = append(line, '\n')
	_, err = os.Stdout.Write(line)
	if c.out != "" {
		f, ferr := os.OpenFile(c.out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if ferr != nil {
			return ferr
		}
		defer f.Close()
		_, err = f.Write(line) // the file's answer is the one that counts
	}
	return err
}
