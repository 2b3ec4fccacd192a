package ptytest

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Pty is an open pseudo-terminal pair. Everything written to the slave is
// collected from the master in the background; Output returns it.
type Pty struct {
	Master *os.File
	Slave  *os.File

	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// Open opens a pair sized cols × rows (0, 0: left unsized) and closes it
// when the test ends.
func Open(t testing.TB, cols, rows int) *Pty {
	t.Helper()
	// Non-blocking, so that os.NewFile puts the master on the poller and
	// Close ends a pending Read.
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("opening /dev/ptmx: %v", err)
	}
	master := os.NewFile(uintptr(m), "/dev/ptmx")
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0) // unlock the slave
	}
	if err != nil {
		master.Close()
		t.Fatalf("setting up the pty: %v", err)
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	s, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		t.Fatalf("opening %s: %v", name, err)
	}
	p := &Pty{Master: master, Slave: os.NewFile(uintptr(s), name), done: make(chan struct{})}
	if cols > 0 && rows > 0 {
		ws := &unix.Winsize{Col: uint16(cols), Row: uint16(rows)}
		if err := unix.IoctlSetWinsize(s, unix.TIOCSWINSZ, ws); err != nil {
			p.close()
			t.Fatalf("sizing the pty: %v", err)
		}
	}
	go p.collect()
	t.Cleanup(p.close)
	return p
}

func (p *Pty) collect() {
	defer close(p.done)
	buf := make([]byte, 4096)
	for {
		n, err := p.Master.Read(buf)
		p.mu.Lock()
		p.out.Write(buf[:n])
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (p *Pty) close() {
	p.Master.Close()
	p.Slave.Close()
	<-p.done
}

// Output is everything written to the slave so far.
func (p *Pty) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Type writes s to the master, as keys typed on the terminal.
func (p *Pty) Type(t testing.TB, s string) {
	t.Helper()
	if _, err := p.Master.WriteString(s); err != nil {
		t.Fatalf("typing %q: %v", s, err)
	}
}

// Termios returns the slave's terminal attributes.
func (p *Pty) Termios(t testing.TB) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(p.Slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatalf("TCGETS: %v", err)
	}
	return *tio
}

// WaitFor polls the output from offset on until cond holds or 10 s pass,
// and returns the output's length when it held.
func (p *Pty) WaitFor(t testing.TB, what string, offset int, cond func(out string) bool) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := p.Output()
		if cond(out[min(offset, len(out)):]) {
			return len(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; output from %d:\n%q", what, offset, out[min(offset, len(out)):])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Frames splits output at cursor-home sequences: a full-screen program
// redraws from the top, so each piece is one drawn screen (the last one
// possibly still arriving), as its lines with escape sequences removed.
func Frames(out string) [][]string {
	var frames [][]string
	for i, f := range strings.Split(out, "\x1b[H") {
		if i == 0 {
			continue // before the first frame
		}
		lines := strings.Split(stripEscapes(f), "\n")
		for j, l := range lines {
			lines[j] = strings.TrimRight(l, "\r") // \r\n, or \r\r\n after ONLCR
		}
		frames = append(frames, lines)
	}
	return frames
}

// stripEscapes removes CSI sequences (ESC [ params final).
func stripEscapes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
