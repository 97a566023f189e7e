// Package broker is the fleet controller's embedded MQTT broker: mochi-mqtt
// (github.com/mochi-mqtt/server/v2) with Tender's authentication, topic ACLs
// and limits as one mochi hook, the same rules configs/mosquitto gives an
// external broker (SECURITY.md §5.1-5.4, F-07..F-09).
//
// # Listeners
//
// A TLS listener (Config.TLSAddr, ":8883" by default) verifies client
// certificates against the fleet CA when a client presents one (a password
// client presents none), and a plain TCP listener (Config.TCPAddr) exists
// only when asked for. Both give a connection Config.ConnectTimeout to
// finish its TLS handshake and send CONNECT. The controller itself is the
// broker's in-process (inline) client: Publish, Subscribe, Unsubscribe.
//
// # Who may connect
//
// Every CONNECT is refused unless one of these holds, with the client id
// equal to the identity in both:
//
//	certificate  a client certificate issued by the fleet CA (client-auth
//	             usage, valid now), not revoked (Config.Revoked), whose CN
//	             is a device id (topic.ValidDeviceID); the MQTT username is
//	             empty or that CN; a password is ignored
//	password     no certificate; username = a device id, and
//	             Config.Passwords.Check(username, password) is true
//
// Refused as well: anonymous clients, empty client ids, the reserved id
// "controller" (the external broker's controller user), a keepalive of 0
// or over Config.MaxKeepAlive, and a Last Will anywhere but the device's
// own presence topic (mochi publishes a will without an ACL check, so a
// will on another device's desired topic would plant a retained document).
// A refused CONNECT gets CONNACK "bad user name or password" (or a failed
// TLS handshake, for a certificate from another CA or a revoked one) and
// is counted by reason (Stats.Refused).
//
// Disconnect(deviceID) cuts a device's connection and drops its session;
// call it after revoking the device (F-07) so that Config.Revoked (or
// Passwords) refuses it from then on. A connection racing the revocation
// is cut when its session is established. ClearRetained clears a device's
// retained topics.
//
// # Topic ACL
//
// Device D (its identity is its client id) may
//
//	publish    tender/v1/devices/D/reported, events, presence, cmd/result
//	subscribe  tender/v1/devices/D/desired, cmd
//
// and nothing else: no other device's topics, no write on any desired
// topic (its own included), no wildcards, nothing under $SYS. MQTT 3.1.1
// has no refusal code for a publish: mochi drops a refused QoS 0 publish
// and cuts the connection on a refused QoS 1 publish; a refused
// subscription gets 0x80 in its SUBACK. The inline client may do anything.
//
// # Limits
//
//	packet size   Config.MaxPacketSize (remaining length; default
//	              mqttc.DefaultMaxPacketSize, the wire's largest message
//	              plus headers): a larger packet cuts the connection at
//	              its fixed header, before its body is read
//	publish rate  a token bucket per device (Config.Rate per second,
//	              Config.Burst): a publish beyond it is acknowledged and
//	              dropped, counted per device; other devices are not
//	              affected
//	queues        Config.MaxInflight QoS 1 messages stored per client,
//	              Config.MaxPendingWrites (32) packets queued for writing
//	              to a connected client; beyond them messages are dropped
//	memory        per device connection, about 16 KiB of goroutine
//	              stacks (mochi's reader and writer), 9 KiB of TLS state
//	              (buffers, ciphers, the parsed client certificate) and
//	              10 KiB of mochi's client, subscriptions and retained
//	              messages
//	sessions      a persistent session is dropped after
//	              Config.SessionExpiry offline; retained messages do not
//	              expire (the desired documents are retained)
//
// # State
//
// A device's retained message on a topic the controller subscribes to
// for every device (its reports and presence, Last Will included) is
// delivered and not kept: the controller stores it, and a copy in the
// broker's memory would only cost (mochi copies every retained message
// each second). Before that subscription, it is kept and handed to it.
//
// The broker keeps its sessions and retained messages in memory only: after
// a restart, devices reconnect and resubscribe, and the controller
// publishes each device's current desired document again (the agent
// ignores one it already holds, by its generation).
//
// # Metrics
//
// Stats returns the counters (connects accepted by method and refused by
// reason, ACL denials, rate-limited and oversized messages, drops per
// device) as plain numbers; the controller's Prometheus collector reads
// them. The package imports no metrics library.
package broker
