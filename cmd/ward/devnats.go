package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startDevNATS runs the embedded NATS server of `ward agent --dev` on
// 127.0.0.1:4222, so the agent works with no other process.
func startDevNATS() (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: 4222, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS: not ready on 127.0.0.1:4222 (port taken? pass --nats to use a running server)")
	}
	return ns, nil
}
