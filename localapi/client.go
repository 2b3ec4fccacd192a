package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/hostward/ward/api"
)

// Client talks to an agent's socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the agent listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Start asks for an instance.
func (c *Client) Start(ctx context.Context, req api.Request) (*api.Instance, error) {
	var inst api.Instance
	return &inst, c.call(ctx, "start", req, &inst)
}

// Stop stops an instance.
func (c *Client) Stop(ctx context.Context, req api.StopRequest) (*api.Instance, error) {
	var inst api.Instance
	return &inst, c.call(ctx, "stop", req, &inst)
}

// Limit changes an instance's limits.
func (c *Client) Limit(ctx context.Context, req api.LimitRequest) (*api.Instance, error) {
	var inst api.Instance
	return &inst, c.call(ctx, "limit", req, &inst)
}

// Info describes one instance.
func (c *Client) Info(ctx context.Context, req api.InfoRequest) (*api.Instance, error) {
	var inst api.Instance
	return &inst, c.call(ctx, "info", req, &inst)
}

// List lists every instance.
func (c *Client) List(ctx context.Context) (*api.List, error) {
	var l api.List
	return &l, c.call(ctx, "list", struct{}{}, &l)
}

// Raw posts a JSON body as it is and returns the reply body as it is, for
// callers that want the exact bytes (`--json`).
func (c *Client) Raw(ctx context.Context, method string, body []byte) ([]byte, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ward/v1/"+method, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the agent's reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			return nil, eb.Error
		}
		return nil, fmt.Errorf("agent replied %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func (c *Client) call(ctx context.Context, method string, req, reply any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	b, err := c.Raw(ctx, method, body)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, reply)
}

// Events calls fn for every event the agent emits until ctx ends, fn
// returns an error, or the agent closes the stream.
func (c *Client) Events(ctx context.Context, fn func(api.Event, []byte) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ward/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("malformed event: %w", err)
		}
		if err := fn(e, sc.Bytes()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}
