// Package bus connects the agent to NATS: the `ward` micro service that
// takes start/stop/limit/info/list commands on ward.<host>.*, and the
// publisher that moves events from the agent's outbox to
// ward.<host>.events.<kind> and removes them only once the server has
// confirmed them.
//
// A bus that is down or unreachable never stops the agent: the connection
// retries forever (with jitter) and events wait in the outbox. Only a
// configuration the server can never accept — bad credentials, unreadable
// key files, a TLS setup that fails verification — is an error at startup.
package bus
