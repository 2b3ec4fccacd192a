package main

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMarkers is returned when a generated section's markers are missing,
// repeated or out of order.
var ErrMarkers = errors.New("generated-section markers")

func beginMarker(name string) string { return "<!-- bench:begin " + name + " -->" }
func endMarker(name string) string   { return "<!-- bench:end " + name + " -->" }

// span finds the lines holding the section's two markers and returns the
// offsets of its body: from just after the begin line to the start of the
// end line.
func span(doc, name string) (from, to int, err error) {
	begin, end := beginMarker(name), endMarker(name)
	find := func(marker string) (int, error) {
		at, n := -1, 0
		for off := 0; off < len(doc); {
			line, _, _ := strings.Cut(doc[off:], "\n")
			if strings.TrimSpace(line) == marker {
				at, n = off, n+1
			}
			off += len(line) + 1
		}
		switch n {
		case 0:
			return 0, fmt.Errorf("%w: no %q line", ErrMarkers, marker)
		case 1:
			return at, nil
		default:
			return 0, fmt.Errorf("%w: %q appears %d times", ErrMarkers, marker, n)
		}
	}
	b, err := find(begin)
	if err != nil {
		return 0, 0, err
	}
	e, err := find(end)
	if err != nil {
		return 0, 0, err
	}
	if e < b {
		return 0, 0, fmt.Errorf("%w: %q comes before %q", ErrMarkers, end, begin)
	}
	from = b + strings.IndexByte(doc[b:], '\n') + 1
	return from, e, nil
}

// Section returns the body between the named section's markers.
func Section(doc, name string) (string, error) {
	from, to, err := span(doc, name)
	if err != nil {
		return "", err
	}
	return doc[from:to], nil
}

// ReplaceSection returns doc with the body between the named section's
// markers replaced; everything outside them is left byte for byte.
func ReplaceSection(doc, name, body string) (string, error) {
	from, to, err := span(doc, name)
	if err != nil {
		return "", err
	}
	if body != "" && !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	return doc[:from] + body + doc[to:], nil
}
