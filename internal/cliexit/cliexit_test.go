package cliexit

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
)

func TestKinds(t *testing.T) {
	base := errors.New(`unknown flag: --frob`)
	ue := UsageError{Err: base, Path: "tender apply"}
	if !errdefs.IsInvalidArgument(ue) || !errors.Is(ue, base) || ue.Error() != base.Error() {
		t.Fatalf("usage error %v: want an invalid argument wrapping %v with its message", ue, base)
	}
	bad := errors.New("memory: 12 parsecs")
	if err := Invalid(bad); !errdefs.IsInvalidArgument(err) || !errors.Is(err, bad) || err.Error() != bad.Error() {
		t.Fatalf("Invalid(%v) = %v", bad, err)
	}
	already := errdefs.ErrInvalidArgument
	if Invalid(already) != already || Invalid(nil) != nil {
		t.Fatal("Invalid wraps what is already an invalid argument, or nil")
	}
}
