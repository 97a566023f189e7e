package wire

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

const (
	tokID   = "0123456789abcdef"
	tokSec  = "0123456789abcdef0123456789abcdef"
	tokHash = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3"
)

func TestJoinTokenRoundTrip(t *testing.T) {
	s := "tdr1." + tokID + "." + tokSec + "." + tokHash
	tok, err := ParseJoinToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID != tokID || tok.Secret != tokSec || tok.CAHash != "sha256:"+tokHash {
		t.Fatalf("parsed %+v", tok)
	}
	if tok.String() != s {
		t.Fatalf("String() = %q, want %q", tok.String(), s)
	}
}

func TestJoinTokenRefused(t *testing.T) {
	for _, s := range []string{
		"",
		"tdr2." + tokID + "." + tokSec + "." + tokHash,
		"tdr1." + tokID + "." + tokSec,
		"tdr1." + strings.ToUpper(tokID) + "." + tokSec + "." + tokHash,
		"tdr1." + tokID + "." + tokSec[1:] + "." + tokHash,
		"tdr1." + tokID + "." + tokSec + "." + tokHash + "00",
		"tdr1." + tokID + "." + tokSec + "." + tokHash + ".x",
	} {
		_, err := ParseJoinToken(s)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseJoinToken(%q) = %v, want invalid argument", s, err)
		}
		if err != nil && strings.Contains(err.Error(), tokSec) {
			t.Errorf("error repeats the secret: %v", err)
		}
	}
}

func TestEnrollRequestRoundTrip(t *testing.T) {
	in := EnrollRequest{TokenID: tokID, Secret: tokSec, DeviceID: "gw-1", CSR: "-----BEGIN CERTIFICATE REQUEST-----", Facts: DeviceFacts{Arch: "arm64"}}
	b, err := EncodeEnrollRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeEnrollRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	in.Schema = EnrollSchema
	if out != in {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

func TestEnrollRequestRefused(t *testing.T) {
	good := `"schema":1,"tokenId":"` + tokID + `","secret":"` + tokSec + `","csr":"x","facts":{"arch":"amd64"}`
	for name, tc := range map[string]struct {
		body string
		is   error
	}{
		"unknown field":          {`{` + good + `,"deviceId":"gw-1","key":"PRIVATE"}`, ErrUnknownField},
		"no schema":              {`{"tokenId":"` + tokID + `","deviceId":"gw-1"}`, ErrSchema},
		"bad device id":          {`{` + good + `,"deviceId":"GW/1"}`, errdefs.ErrInvalidArgument},
		"bad token id":           {strings.Replace(`{`+good+`,"deviceId":"gw-1"}`, tokID, "zz", 1), errdefs.ErrInvalidArgument},
		"not an object":          {`[]`, ErrMalformed},
		"password, not its hash": {`{` + good + `,"deviceId":"gw-1","passwordHash":"hunter2"}`, errdefs.ErrInvalidArgument},
		"too large":              {`{"csr":"` + strings.Repeat("a", MaxEnrollRequestSize) + `"}`, ErrTooLarge},
		"trailing data":          {`{` + good + `,"deviceId":"gw-1"}{}`, ErrMalformed},
	} {
		_, err := DecodeEnrollRequest([]byte(tc.body))
		if !errors.Is(err, tc.is) || !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: got %v, want %v", name, err, tc.is)
		}
	}
}

func TestEnrollResponseRoundTripAndRefusals(t *testing.T) {
	in := EnrollResponse{DeviceID: "gw-1", Certificate: "c", CA: "ca", Brokers: []string{"tls://127.0.0.1:8883"}, PublicKey: "k", Labels: map[string]string{"site": "berlin"}}
	b, err := EncodeEnrollResponse(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeEnrollResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.DeviceID != "gw-1" || out.Labels["site"] != "berlin" || out.Brokers[0] != in.Brokers[0] || out.Schema != EnrollSchema {
		t.Fatalf("got %+v", out)
	}
	for _, mut := range []func(*EnrollResponse){
		func(r *EnrollResponse) { r.Brokers = nil },
		func(r *EnrollResponse) { r.CA = "" },
		func(r *EnrollResponse) { r.PublicKey = "" },
		func(r *EnrollResponse) { r.Certificate = "" },
		func(r *EnrollResponse) { r.DeviceID = "../x" },
		func(r *EnrollResponse) { r.Brokers = []string{"tls://x\n"} },
	} {
		r := in
		mut(&r)
		b, err := EncodeEnrollResponse(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeEnrollResponse(b); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: got %v, want invalid argument", r, err)
		}
	}
}
