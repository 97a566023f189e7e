package image_test

import (
	"bytes"
	"context"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tender-edge/tender/runtime/image"
	"github.com/tender-edge/tender/test/ociarchive"
)

// A layer that inflates more than 100:1 loads (the size caps hold it) but
// is reported as a possible decompression bomb; an ordinary one is not.
func TestLoad_CompressionRatioAlarm(t *testing.T) {
	for _, tc := range []struct {
		name  string
		data  []byte
		alarm bool
	}{
		{"zeros", make([]byte, 16<<20), true},
		{"ordinary", []byte(strings.Repeat("a line of text\n", 1000)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := image.Open(t.TempDir(), image.Options{Log: zerolog.New(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			archive, err := ociarchive.Single("tender.test/ratio:1", ociarchive.Image{
				Arch: goruntime.GOARCH, Layers: []ociarchive.Layer{{{Path: "blob", Data: tc.data}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(context.Background(), bytes.NewReader(archive)); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "decompression bomb"); got != tc.alarm {
				t.Errorf("alarm = %v, want %v; log: %s", got, tc.alarm, logs.String())
			}
		})
	}
}
