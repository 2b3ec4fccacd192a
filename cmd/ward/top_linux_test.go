package main

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/ptytest"
)

// The screen puts the terminal back when a panic unwinds through the
// deferred Close, as it does in topLive.
func TestScreenRestoresTerminalOnPanic(t *testing.T) {
	p := ptytest.Open(t, 100, 30)
	before := p.Termios(t)
	if before.Lflag&unix.ICANON == 0 || before.Lflag&unix.ECHO == 0 {
		t.Fatalf("a fresh pty should be canonical with echo: lflag %#x", before.Lflag)
	}
	var during unix.Termios
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v", r)
			}
		}()
		scr, err := openScreen(p.Slave, p.Slave)
		if err != nil {
			t.Fatal(err)
		}
		defer scr.Close()
		during = p.Termios(t)
		panic("boom")
	}()
	if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("live mode left ICANON/ECHO/ISIG on: lflag %#x", during.Lflag)
	}
	if during.Cc[unix.VMIN] != 1 || during.Cc[unix.VTIME] != 0 {
		t.Errorf("VMIN %d VTIME %d, want 1 and 0", during.Cc[unix.VMIN], during.Cc[unix.VTIME])
	}
	if after := p.Termios(t); after != before {
		t.Errorf("terminal not restored:\nbefore %+v\nafter  %+v", before, after)
	}
	p.WaitFor(t, "the alternate screen entered and left", 0, func(out string) bool {
		return out == enterScreen+leaveScreen
	})
}

func TestScreenCloseTwice(t *testing.T) {
	p := ptytest.Open(t, 0, 0)
	before := p.Termios(t)
	scr, err := openScreen(p.Slave, p.Slave)
	if err != nil {
		t.Fatal(err)
	}
	if err := scr.Close(); err != nil {
		t.Fatal(err)
	}
	// A second Close (the deferred one after an explicit one) changes
	// nothing and writes nothing more.
	p.Type(t, "x") // echoed if, and only if, echo is back on
	p.WaitFor(t, "the echo of a typed key", 0, func(out string) bool { return strings.HasSuffix(out, "x") })
	if err := scr.Close(); err != nil {
		t.Fatal(err)
	}
	if after := p.Termios(t); after != before {
		t.Errorf("terminal changed by a second Close: %+v", after)
	}
	if got, want := p.Output(), enterScreen+leaveScreen+"x"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestScreenSizeAndDraw(t *testing.T) {
	p := ptytest.Open(t, 0, 0)
	scr, err := openScreen(nil, p.Slave) // output only: input not a terminal
	if err != nil {
		t.Fatal(err)
	}
	defer scr.Close()
	if w, h := scr.size(); w != 80 || h != 24 {
		t.Errorf("unsized pty: %dx%d, want the 80x24 fallback", w, h)
	}
	if err := unix.IoctlSetWinsize(int(p.Slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: 120, Row: 3}); err != nil {
		t.Fatal(err)
	}
	w, h := scr.size()
	if w != 120 || h != 3 {
		t.Errorf("size %dx%d, want 120x3", w, h)
	}
	// Output verbatim: no \n -> \r\n mapping on the way to the master.
	tio := p.Termios(t)
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(p.Slave.Fd()), unix.TCSETS, &tio); err != nil {
		t.Fatal(err)
	}
	start := len(enterScreen)
	p.WaitFor(t, "enter sequence", 0, func(out string) bool { return len(out) >= start })
	if err := scr.draw([]string{"one", "two"}, h); err != nil {
		t.Fatal(err)
	}
	// Every row erased then written, the unused one blanked, and no
	// newline after the last (it would scroll the screen).
	want := "\x1b[H\x1b[2Kone\r\n\x1b[2Ktwo\r\n\x1b[2K"
	p.WaitFor(t, "a drawn frame", start, func(out string) bool { return out == want })
}
