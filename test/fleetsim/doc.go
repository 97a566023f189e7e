// Package fleetsim simulates a fleet of Tender devices over real MQTT, for
// the fleet controller's tests and benchmarks (issue 10; 100,000 devices
// across several processes for issue 13). It speaks the wire only
// (sync/wire, sync/sign, sync/topic), never the agent's or the
// controller's code, so it exercises the controller and its broker as
// devices would.
//
// # A simulated device
//
// Each device connects with client id = its device id, over mutual TLS
// (a client certificate per device, CN = its id, issued by Config.CA or
// given by Config.Certificate) or plain TCP with a password (username =
// its id), with "offline" as its retained Last Will. On every connect it
// subscribes to its desired (retained) and cmd topics, publishes a
// retained "online" presence and its report. Then:
//
//	desired document ──► same bytes as the last accepted?  ── yes ─► ignored (retained redelivery)
//	                          │ no
//	                          ▼
//	            sign.VerifyMessage(fleet key, this device, generation
//	            above the last accepted, not expired)  ── refused ─► counted by reason, answered with nothing
//	                          │ accepted
//	                          ▼
//	            event applied-desired ──(ApplyDelay + jitter)──► "runs" its apps:
//	              good version: containers running and healthy, events started,
//	                            report with observedGeneration = the generation
//	              bad version (Config.Bad): containers unhealthy, app "verifying",
//	                            events unhealthy, observedGeneration unchanged
//
// A newer document arriving before the apply supersedes it. Commands are
// verified as the agent does (sign.VerifyCommandMessage with a replay
// guard) and answered with an empty success; refused ones get no answer.
// Reports are also sent every Heartbeat; a PINGREQ goes out when the
// connection was idle for half the keepalive. Events carry a per-device
// sequence number from 1. The simulator keeps no outbox: what happens
// while disconnected is summed up by the report on reconnect.
//
// # Connections
//
// Connects, reconnects included, go through one pacer for the whole
// fleet (Config.ConnectRate per second), so the broker is not stormed
// after it restarts; a lost connection is retried after a full-jitter
// exponential backoff (BackoffBase doubling up to BackoffCap).
//
// # Why its own MQTT client
//
// Conn is a minimal MQTT 3.1.1 client on a net.Conn: CONNECT with a
// will, SUBSCRIBE, PUBLISH at QoS 1 (PUBACKs counted, not awaited, no
// retransmission: the report after a reconnect is the state), PUBACK of
// what it receives, PINGREQ. A device costs one goroutine (its reader,
// blocked in the runtime's netpoller, which is the shared event loop)
// and two runtime timers; no paho client (two to four goroutines, its
// stores and channels each). Measured on this 2-core VM: about 13 KiB of
// Go heap and stacks per device over TLS with 200 devices after a
// document; with 10,000 devices, about 20 KiB of live heap and stacks
// and 45–50 KiB of RSS per device at GOGC=100 (test/bench/fleet.sh),
// which puts 100,000 devices at 2 GiB live, 5 GiB of RSS, over a few
// processes. A hand-written event loop over
// raw file descriptors would save the reader's stack (8 KiB) but not
// TLS's buffers, which dominate.
//
// # Enrollment
//
// Enroll makes the devices the controller's own: each makes a key and a
// CSR and posts it to `tender serve`'s POST /v1/enroll with one join
// token of N uses, checking the controller's certificate against the
// token's CA hash as the agent does; the answers give each device its
// client certificate, and the fleet CA, the fleet's signing key and the
// broker URLs for Config. A 429 (the per-address rate limit, F-04) or a
// 503 (a token use raced) is retried. The controller's limit is 10 at
// once then one every 6 s per address; a benchmark enrolling thousands
// of devices from one host runs `tender serve --enroll-rate N`, which
// only raises it (test/bench/fleet.sh).
//
// # Stats
//
// Sim.Stats counts connections, documents verified and refused (by
// reason), commands, reports, events and publish errors, and the
// percentiles of the time from a document's issuedAt to the device's
// report that it runs it (TakeLatency starts a new series). Sim.Observed
// counts the devices that reported a generation.
//
// # Several mosquittos
//
// One mosquitto process holds at most as many devices as it may open
// files (20,000 in the VM the benchmarks run in). WriteBridge writes the
// repository's configs/mosquitto/bridge for edges that devices connect to,
// bridged to a core that the controllers connect to (and issues each
// edge's bridge certificate from the fleet CA); `fleetsim bridge` does it
// for test/bench/fleet.sh, which spreads simulator processes over the
// edges, and TestBridgeEdgeCore checks retained documents and F-08 across
// a real edge and core.
//
// # The test publisher
//
// Publisher stands in for the controller against a bare broker:
// it signs desired documents (Doc, Publish), or publishes any bytes
// (PublishRaw, for forgeries), and decodes every report and event with
// the wire's strict decoders to tell when the fleet converged
// (WaitObserved). The command (cmd/fleetsim) wraps all of it for
// test/bench/fleet.sh, whose default mode runs the real controller
// instead: devices enrolled through `tender serve`, rollouts applied with
// the CLI.
package fleetsim
