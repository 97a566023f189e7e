package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/tender-edge/tender/sync/mqttc"
	"github.com/tender-edge/tender/sync/topic"
)

// Transport is how the controller speaks MQTT: the embedded broker
// (fleet/broker.Broker fits as it is) or, with --broker, an authenticated
// client of an external one (MQTT).
type Transport interface {
	// Publish sends payload on topic with QoS 1 and returns once the
	// broker took it.
	Publish(topic string, payload []byte, retained bool) error
	// Subscribe registers h for filter (QoS 1); h runs on the receive
	// path and must return quickly.
	Subscribe(filter string, h mqttc.Handler) error
}

// Revoker acts on the broker when a device is removed: the embedded
// broker (fleet/broker.Broker fits as it is) cuts the device's session
// and drops its retained messages. With an external broker, the CRL
// keeps the device out at its next connection, and ClearRetained is
// done by publishing empty retained messages (MQTT.ClearRetained).
type Revoker interface {
	Disconnect(id string)
	ClearRetained(id string) error
}

// MQTT adapts an mqttc client to Transport and Revoker. Timeout bounds
// each publish and subscribe (default 10s).
type MQTT struct {
	Client  *mqttc.Client
	Timeout time.Duration
}

func (m MQTT) timeout() time.Duration {
	if m.Timeout <= 0 {
		return 10 * time.Second
	}
	return m.Timeout
}

// Publish implements Transport.
func (m MQTT) Publish(t string, payload []byte, retained bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout())
	defer cancel()
	return m.Client.Publish(ctx, t, payload, retained)
}

// Subscribe implements Transport.
func (m MQTT) Subscribe(filter string, h mqttc.Handler) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout())
	defer cancel()
	return m.Client.Subscribe(ctx, filter, h)
}

// Disconnect implements Revoker: a client cannot cut another client's
// session; the broker's CRL refuses the device's next connection, once
// the broker re-read it (mosquitto: SIGHUP, configs/mosquitto).
func (m MQTT) Disconnect(string) {}

// ClearRetained implements Revoker with an empty retained message on
// each of the device's topics that hold one.
func (m MQTT) ClearRetained(id string) error {
	for _, k := range []topic.Kind{topic.Desired, topic.Reported, topic.Presence} {
		t, err := topic.Build(id, k)
		if err != nil {
			return err
		}
		if err := m.Publish(t, nil, true); err != nil {
			return fmt.Errorf("clear retained %s: %w", t, err)
		}
	}
	return nil
}
