package wire

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const testAppYAML = `
name: thermo
version: "1.4.2"
containers:
  - name: reader
    image: registry.example.com/acme/thermo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func testDesired(t testing.TB) Desired {
	t.Helper()
	app, err := ParseApp([]byte(testAppYAML))
	if err != nil {
		t.Fatalf("parse test app: %v", err)
	}
	return Desired{
		DeviceID:   "gw-1",
		FleetID:    "acme",
		Generation: 7,
		IssuedAt:   t0,
		ExpiresAt:  t0.Add(24 * time.Hour),
		Apps:       []App{app},
	}
}

func TestDesired_RoundTrip(t *testing.T) {
	d := testDesired(t)
	b, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDesired(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if got.Schema != DesiredSchema || got.Generation != 7 || got.DeviceID != "gw-1" ||
		!got.ExpiresAt.Equal(d.ExpiresAt) || len(got.Apps) != 1 || got.Apps[0].Name != "thermo" {
		t.Errorf("round trip = %+v", got)
	}
	again, err := Encode(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, again) {
		t.Errorf("re-encoding differs:\n%s\n%s", b, again)
	}
}

// finer lists the wire's sentinels; every decode error matches at most one,
// and all of them wrap errdefs.ErrInvalidArgument.
var finer = []error{ErrMalformed, ErrUnknownField, ErrSchema, ErrTooLarge, ErrGenerationRange}

func TestDecodeDesired_Rejects(t *testing.T) {
	good, err := Encode(testDesired(t))
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte {
		t.Helper()
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("%s not in %s", old, good)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"not json", []byte("hello"), ErrMalformed},
		{"array", []byte("[1,2]"), ErrMalformed},
		{"null", []byte("null"), ErrMalformed},
		{"truncated", good[:len(good)-3], ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), []byte(` {}`)...), ErrMalformed},
		{"wrong type", replace(`"generation":7`, `"generation":"7"`), ErrMalformed},
		{"negative generation", replace(`"generation":7`, `"generation":-7`), ErrMalformed},
		{"unknown field", replace(`"fleetId"`, `"evil":1,"fleetId"`), ErrUnknownField},
		{"unknown nested field", replace(`"name":"reader"`, `"name":"reader","privileged":true`), ErrUnknownField},
		{"schema missing", replace(`"schema":1,`, ``), ErrSchema},
		{"schema 2", replace(`"schema":1`, `"schema":2`), ErrSchema},
		{"schema 2 with new fields", replace(`"schema":1`, `"schema":2,"future":{}`), ErrSchema},
		{"schema not a number", replace(`"schema":1`, `"schema":"1"`), ErrMalformed},
		{"bad device id", replace(`"gw-1"`, `"gw/+"`), errdefs.ErrInvalidArgument},
		{"generation 0", replace(`"generation":7`, `"generation":0`), errdefs.ErrInvalidArgument},
		{"no expiry", replace(`"expiresAt":"2026-03-02T10:00:00Z"`, `"expiresAt":"0001-01-01T00:00:00Z"`), errdefs.ErrInvalidArgument},
		{"expiry before issue", replace(`"expiresAt":"2026-03-02T10:00:00Z"`, `"expiresAt":"2026-03-01T09:00:00Z"`), errdefs.ErrInvalidArgument},
		{"invalid app", replace(`"name":"thermo"`, `"name":"Thermo!"`), errdefs.ErrInvalidArgument},
		{"generation 2^53+1", replace(`"generation":7`, `"generation":9007199254740993`), ErrGenerationRange},
		{"generation 2^64-1", replace(`"generation":7`, `"generation":18446744073709551615`), ErrGenerationRange},
		{"too large", append(append([]byte{}, good...), bytes.Repeat([]byte(" "), MaxDesiredSize)...), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeDesired(tt.data)
			if !errors.Is(err, tt.want) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("DecodeDesired = %v, want %v", err, tt.want)
			}
			for _, other := range finer {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestDecodeDesired_DuplicateApp(t *testing.T) {
	d := testDesired(t)
	d.Apps = append(d.Apps, d.Apps[0])
	b, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeDesired(b); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "twice") {
		t.Errorf("DecodeDesired = %v, want a duplicate app error", err)
	}
}

func TestErrorTypes(t *testing.T) {
	_, err := DecodeEvent(bytes.Repeat([]byte("x"), MaxEventSize+1))
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Size != MaxEventSize+1 || tl.Limit != MaxEventSize || tl.Kind != "event" {
		t.Errorf("DecodeEvent(oversized) = %v", err)
	}
	_, err = DecodeReported([]byte(`{"schema":9}`))
	var se *SchemaError
	if !errors.As(err, &se) || se.Got != 9 || se.Want != ReportedSchema {
		t.Errorf("DecodeReported(schema 9) = %v", err)
	}
	_, err = DecodeCommand([]byte(`{"schema":2,"id":"c1","kind":"logs","app":"a","bogus":1}`))
	if !errors.Is(err, ErrUnknownField) || !strings.Contains(err.Error(), `"bogus"`) {
		t.Errorf("DecodeCommand(unknown field) = %v, want it named", err)
	}
}

func TestEnvelope(t *testing.T) {
	payload, err := Encode(testDesired(t))
	if err != nil {
		t.Fatal(err)
	}
	env := Envelope{Payload: payload, Signature: []byte{1, 2, 3}, KeyID: "k1"}
	b, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, payload) || !bytes.Equal(got.Signature, env.Signature) || got.KeyID != "k1" {
		t.Errorf("envelope round trip = %+v", got)
	}
	for name, data := range map[string]string{
		"no payload":    `{"signature":"AQID","keyId":"k"}`,
		"null payload":  `{"payload":null}`,
		"unknown field": `{"payload":{},"sig":"x"}`,
		"not base64":    `{"payload":{},"signature":"!!"}`,
	} {
		if _, err := DecodeEnvelope([]byte(data)); err == nil {
			t.Errorf("DecodeEnvelope(%s) accepted %s", name, data)
		}
	}
}

func TestReported_RoundTrip(t *testing.T) {
	r := Reported{
		DeviceID:           "gw-1",
		ObservedGeneration: 7,
		Apps: []AppStatus{{Name: "thermo", Version: "1.4.2", State: "running", Containers: []ContainerStatus{{
			Name: "reader", State: ContainerRunning, Health: HealthHealthy, Restarts: 2, CPUNanos: 5e9, MemoryBytes: 1 << 20,
		}}}},
		Device:         DeviceFacts{Arch: "arm64", Kernel: "6.1.0", CgroupVersion: 1, MemoryBytes: 512 << 20, CPUs: 4, AgentVersion: "v0.1"},
		DroppedEvents:  3,
		ClockUntrusted: true,
		Time:           t0,
	}
	b, err := Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReported(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if got.Schema != ReportedSchema || got.Apps[0].Containers[0].Restarts != 2 || got.Device.CPUs != 4 ||
		got.DroppedEvents != 3 || !got.ClockUntrusted || !got.Time.Equal(t0) {
		t.Errorf("round trip = %+v", got)
	}
	if r.Schema != 0 {
		t.Error("Encode modified its argument")
	}
}

func TestEvent_RoundTrip(t *testing.T) {
	e := Event{DeviceID: "gw-1", Seq: 42, Time: t0, Kind: EventOOMKilled, App: "thermo", Container: "reader", Reason: "memory limit 64Mi"}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	e.Schema = EventSchema
	if got != e {
		t.Errorf("round trip = %+v, want %+v", got, e)
	}
	if _, err := DecodeEvent([]byte(`{"schema":1,"deviceId":"gw-1","seq":1}`)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("event without kind: %v", err)
	}
	big := e
	big.Reason = strings.Repeat("x", MaxEventSize)
	if _, err := Encode(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encode(oversized event) = %v", err)
	}
}

func TestCommand_RoundTripAndRejects(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	c := Command{DeviceID: "gw-1", ID: strings.Repeat("0a", 16), IssuedAt: t0, ExpiresAt: t0.Add(MaxCommandLifetime),
		Kind: CommandLogs, App: "thermo", Container: "reader", Lines: 100}
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(b)
	c.Schema = CommandSchema
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("round trip = %+v, %v", got, err)
	}
	good := string(b)
	for _, tt := range []struct{ name, old, new string }{
		{"schema 1 (unsigned commands)", `"schema":2`, `"schema":1`},
		{"no device", `"deviceId":"gw-1",`, ``},
		{"bad device", `"gw-1"`, `"gw/+"`},
		{"id empty", `"id":"0a0a`, `"id":"`},
		{"id short", `"id":"0a`, `"id":"`},
		{"id upper case", `"id":"0a`, `"id":"0A`},
		{"id not hex", `"id":"0a`, `"id":"zz`},
		{"no issuedAt", `"issuedAt":"2026-03-01T10:00:00Z",`, ``},
		{"no expiresAt", `"expiresAt":"2026-03-01T10:10:00Z",`, ``},
		{"expiry before issue", `"expiresAt":"2026-03-01T10:10:00Z"`, `"expiresAt":"2026-03-01T09:59:59Z"`},
		{"lifetime over the cap", `"expiresAt":"2026-03-01T10:10:00Z"`, `"expiresAt":"2026-03-01T10:10:01Z"`},
		{"kind exec", `"kind":"logs"`, `"kind":"exec"`},
		{"app empty", `"app":"thermo"`, `"app":""`},
		{"app with escape", `"app":"thermo"`, `"app":"th\u001b[2J"`},
		{"container with escape", `"container":"reader"`, `"container":"r\u001b]0;x\u0007"`},
		{"lines negative", `"lines":100`, `"lines":-1`},
		{"lines over the cap", `"lines":100`, `"lines":10001`},
	} {
		if !strings.Contains(good, tt.old) {
			t.Fatalf("%s: %s not in %s", tt.name, tt.old, good)
		}
		bad := strings.Replace(good, tt.old, tt.new, 1)
		if _, err := DecodeCommand([]byte(bad)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: DecodeCommand(%s) = %v, want an invalid argument", tt.name, bad, err)
		}
	}
	if _, err := DecodeCommandEnvelope([]byte(`{"payload":"` + strings.Repeat("x", MaxCommandEnvelope) + `"}`)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("DecodeCommandEnvelope(oversized) = %v, want ErrTooLarge", err)
	}
	r := CommandResult{ID: "c-1", OK: false, Error: "no such container"}
	b, err = Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	gr, err := DecodeCommandResult(b)
	r.Schema = CommandResultSchema
	if err != nil || gr != r {
		t.Errorf("result round trip = %+v, %v", gr, err)
	}
}

func TestPresence(t *testing.T) {
	for _, p := range []Presence{Online, Offline} {
		got, err := ParsePresence([]byte(p))
		if err != nil || got != p {
			t.Errorf("ParsePresence(%s) = %q, %v", p, got, err)
		}
	}
	for _, bad := range []string{"", "Online", "online\n", `"online"`} {
		if _, err := ParsePresence([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePresence(%q) = %v", bad, err)
		}
	}
}

func TestEncode_NotAMessage(t *testing.T) {
	if _, err := Encode(42); err == nil {
		t.Error("Encode(42) succeeded")
	}
}

func FuzzDecodeDesired(f *testing.F) {
	good, err := Encode(testDesired(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`{"schema":2,"x":1}`))
	f.Add([]byte(`{"schema":1,"deviceId":"a","generation":1,"issuedAt":"2026-01-01T00:00:00Z","expiresAt":"2026-01-02T00:00:00Z","apps":[{"name":"a","containers":[{}]}]}`))
	f.Add([]byte(`{"schema":1,"apps":[{"placement":{"devices":"all"},"rollout":{"waves":["10%"]}}]}`))
	f.Add([]byte(`[`))
	f.Add([]byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDesired(data)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not an invalid argument", err)
			}
			return
		}
		// An accepted document re-encodes and decodes to an accepted document.
		b, err := Encode(d)
		if err != nil {
			t.Fatalf("re-encode accepted document: %v", err)
		}
		if _, err := DecodeDesired(b); err != nil {
			t.Fatalf("re-decode accepted document %s: %v", b, err)
		}
	})
}

// TestReported_EncodingUnchanged pins a report's bytes as the agent sent
// them while container states and health were plain strings: typing them
// changed no byte on the wire (no-health omitted, states as before).
func TestReported_EncodingUnchanged(t *testing.T) {
	r := Reported{
		DeviceID: "gw-1", ObservedGeneration: 7, DesiredDigest: "sha256:ab",
		Apps: []AppStatus{{Name: "thermo", Version: "1.4.2", State: "degraded", Message: "reader restarting", Containers: []ContainerStatus{
			{Name: "reader", Image: "r@sha256:cd", State: ContainerCrashLoop, Health: HealthUnhealthy, Restarts: 4, ExitCode: 137, OOMKilled: true,
				StartedAt: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), CPUNanos: 5e9, MemoryBytes: 1 << 20, MemoryLimit: 64 << 20},
			{Name: "side", State: ContainerStarting, Health: HealthNone},
			{Name: "web", State: ContainerRunning, Health: HealthHealthy},
		}}},
		Device:        DeviceFacts{Arch: "arm64", Kernel: "6.1.0", CgroupVersion: 2, MemoryBytes: 512 << 20, CPUs: 4, AgentVersion: "v0.1"},
		DroppedEvents: 3, ClockUntrusted: true, Time: time.Date(2026, 5, 1, 12, 0, 1, 0, time.UTC),
	}
	const want = `{"schema":1,"deviceId":"gw-1","observedGeneration":7,"desiredDigest":"sha256:ab",` +
		`"apps":[{"name":"thermo","version":"1.4.2","state":"degraded","message":"reader restarting","containers":[` +
		`{"name":"reader","image":"r@sha256:cd","state":"crash-loop","health":"unhealthy","restarts":4,"exitCode":137,"oomKilled":true,` +
		`"startedAt":"2026-05-01T12:00:00Z","cpuNanos":5000000000,"memoryBytes":1048576,"memoryLimit":67108864},` +
		`{"name":"side","state":"starting","restarts":0},` +
		`{"name":"web","state":"running","health":"healthy","restarts":0}]}],` +
		`"device":{"arch":"arm64","kernel":"6.1.0","cgroupVersion":2,"memoryBytes":536870912,"cpus":4,"agentVersion":"v0.1"},` +
		`"droppedEvents":3,"clockUntrusted":true,"time":"2026-05-01T12:00:01Z"}`
	b, err := Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("encoding changed:\ngot  %s\nwant %s", b, want)
	}
	got, err := DecodeReported(b)
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Apps[0].Containers; c[0].State != ContainerCrashLoop || c[0].Health != HealthUnhealthy || c[1].Health != HealthNone {
		t.Errorf("decoded containers = %+v", c)
	}
}
