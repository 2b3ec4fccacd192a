package integration

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/ptytest"
)

const (
	altScreenOn  = "\x1b[?1049h"
	altScreenOff = "\x1b[?1049l"
	cursorShown  = "\x1b[?25h"
)

// runInstance starts an instance through the CLI and returns its id.
func (h *host) runInstance(args ...string) string {
	h.t.Helper()
	out, errOut, code := h.run(append([]string{"run"}, args...)...)
	if code != 0 {
		h.t.Fatalf("ward run %v: exit %d: %s", args, code, errOut)
	}
	return strings.TrimSpace(out)
}

// startTop runs `ward top args...` with the pty's slave as its controlling
// terminal, stdin, stdout and stderr. The returned channel closes when it
// has exited; the process is killed if the test ends first.
func startTop(t *testing.T, h *host, p *ptytest.Pty, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(wardBin, append([]string{"top"}, args...)...)
	cmd.Env = append(os.Environ(), "WARD_SOCKET="+h.cfg.Socket)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Slave, p.Slave, p.Slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return cmd, exited
}

func waitExit(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}) {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("ward top did not exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("ward top exited %d", code)
	}
}

// frameWith reports whether a screen drawn in out satisfies ok.
func frameWith(out string, ok func(lines []string) bool) bool {
	return slices.ContainsFunc(ptytest.Frames(out), ok)
}

// rowOf is the line number of the instance's row, -1 when absent.
func rowOf(lines []string, id string) int {
	return slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, id+" ") })
}

// sortedFrame matches a complete screen sorted by key with first above
// second, and (when wantErr) an error line or (otherwise) none.
func sortedFrame(key, first, second string, wantErr bool) func([]string) bool {
	return func(lines []string) bool {
		if len(lines) < 2 || !strings.Contains(lines[0], " sort "+key) {
			return false
		}
		if strings.HasPrefix(lines[1], "error: cannot reach the agent") != wantErr {
			return false
		}
		a, b := rowOf(lines, first), rowOf(lines, second)
		return a > 0 && b > a
	}
}

func TestTop(t *testing.T) {
	h := newHost(t)
	h.start("")
	// Sorted by name, small comes first; by memory, big does.
	small := h.runInstance("--name", "aaa-small", "--", "sleep", "1000")
	big := h.runInstance("--name", "zzz-big", "--memory", "128M", "--", tenantBin, "hog", "-mb", "40")
	t.Cleanup(func() {
		h.run("stop", small, "--timeout", "0s")
		h.run("stop", big, "--timeout", "0s")
	})
	waitFor(t, "the hog's memory", func() bool {
		in, err := h.client.Info(context.Background(), api.InfoRequest{ID: big})
		return err == nil && in.Usage.MemoryBytes != nil && *in.Usage.MemoryBytes > 30<<20
	})

	t.Run("snapshot", func(t *testing.T) {
		// stdout is a pipe: one plain-text snapshot, no terminal sequences.
		out, errOut, code := h.run("top", "--sort", "mem")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if strings.Contains(out, "\x1b") || len(lines) != 4 {
			t.Fatalf("want a header, titles and two rows, plain:\n%q", out)
		}
		if !strings.HasPrefix(lines[0], "agent "+h.cfg.Socket+"  2 running of 2  cpu ") || !strings.Contains(lines[0], " sort mem") {
			t.Errorf("header %q", lines[0])
		}
		if !strings.HasPrefix(lines[2], big+" ") || !strings.HasPrefix(lines[3], small+" ") {
			t.Errorf("not by memory:\n%s", out)
		}
		if !strings.Contains(lines[2], "/128M") || !strings.Contains(lines[3], "/256M") {
			t.Errorf("memory limits missing:\n%s", out)
		}
	})

	t.Run("live", func(t *testing.T) {
		p := ptytest.Open(t, 120, 20)
		before := p.Termios(t)
		cmd, exited := startTop(t, h, p, "--sort", "name", "--interval", "200ms")

		off := p.WaitFor(t, "a screen sorted by name", 0, func(out string) bool {
			return strings.HasPrefix(out, altScreenOn) && frameWith(out, sortedFrame("name", small, big, false))
		})
		if during := p.Termios(t); during.Lflag&(unix.ICANON|unix.ECHO) != 0 {
			t.Errorf("live mode left line editing or echo on: lflag %#x", during.Lflag)
		}

		p.Type(t, "m")
		off = p.WaitFor(t, "a screen sorted by memory", off, func(out string) bool {
			return frameWith(out, sortedFrame("mem", big, small, false))
		})

		// The agent goes away: an error line over the last table, no crash.
		h.kill()
		off = p.WaitFor(t, "the error line", off, func(out string) bool {
			return frameWith(out, sortedFrame("mem", big, small, true))
		})
		// It comes back: the next refresh clears the error.
		h.start("")
		off = p.WaitFor(t, "a screen without the error", off, func(out string) bool {
			return frameWith(out, sortedFrame("mem", big, small, false))
		})

		p.Type(t, "q")
		waitExit(t, cmd, exited)
		if after := p.Termios(t); after != before {
			t.Errorf("terminal attributes not restored:\nbefore %+v\nafter  %+v", before, after)
		}
		// The last thing written: nothing after it can have drawn again.
		p.WaitFor(t, "the alternate screen left", off, func(out string) bool {
			return strings.HasSuffix(out, cursorShown+altScreenOff)
		})
	})

	t.Run("resize", func(t *testing.T) {
		p := ptytest.Open(t, 120, 20)
		cmd, exited := startTop(t, h, p, "--sort", "mem", "--interval", "1h")
		off := p.WaitFor(t, "a screen sorted by memory", 0, func(out string) bool {
			return frameWith(out, sortedFrame("mem", big, small, false))
		})
		// A smaller window: SIGWINCH redraws at once (no refresh comes in
		// the hour), fitted to it.
		if err := unix.IoctlSetWinsize(int(p.Slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: 40, Row: 4}); err != nil {
			t.Fatal(err)
		}
		off = p.WaitFor(t, "a 40x4 screen", off, func(out string) bool {
			return frameWith(out, func(l []string) bool {
				for _, line := range l {
					if utf8.RuneCountInString(line) > 40 {
						return false
					}
				}
				// IDs and names shortened to fit, the rest cut at the edge.
				return len(l) == 4 && strings.HasPrefix(l[0], "agent ") && strings.HasPrefix(l[1], "ID ") &&
					strings.HasPrefix(l[2], big[:5]+"~  zzz-b~  running") && strings.HasPrefix(l[3], small[:5]+"~  aaa-s~  running")
			})
		})

		p.Type(t, "q")
		waitExit(t, cmd, exited)
	})

	// Every other way out leaves the terminal as it was, too.
	for _, quit := range []struct {
		name string
		do   func(*exec.Cmd, *ptytest.Pty) error
	}{
		{"sigterm", func(c *exec.Cmd, _ *ptytest.Pty) error { return c.Process.Signal(syscall.SIGTERM) }},
		{"sigint", func(c *exec.Cmd, _ *ptytest.Pty) error { return c.Process.Signal(syscall.SIGINT) }},
		{"ctrl-c", func(_ *exec.Cmd, p *ptytest.Pty) error { _, err := p.Master.WriteString("\x03"); return err }},
	} {
		t.Run(quit.name, func(t *testing.T) {
			p := ptytest.Open(t, 80, 10)
			before := p.Termios(t)
			cmd, exited := startTop(t, h, p)
			off := p.WaitFor(t, "a screen with both instances", 0, func(out string) bool {
				return frameWith(out, func(l []string) bool { return rowOf(l, small) > 0 && rowOf(l, big) > 0 })
			})
			if during := p.Termios(t); during == before {
				t.Fatal("live mode did not change the terminal's attributes")
			}
			if err := quit.do(cmd, p); err != nil {
				t.Fatal(err)
			}
			waitExit(t, cmd, exited)
			if after := p.Termios(t); after != before {
				t.Errorf("terminal attributes not restored:\nbefore %+v\nafter  %+v", before, after)
			}
			p.WaitFor(t, "the alternate screen left", off, func(out string) bool {
				return strings.HasSuffix(out, cursorShown+altScreenOff)
			})
		})
	}
}
