package sentinel

import (
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
)

func TestNew(t *testing.T) {
	err := New("malformed message", errdefs.ErrInvalidArgument)
	if err.Error() != "malformed message" {
		t.Errorf("message %q", err)
	}
	wrapped := fmt.Errorf("envelope: %w", err)
	if !errors.Is(wrapped, err) || !errdefs.IsInvalidArgument(wrapped) || errdefs.IsNotFound(wrapped) {
		t.Errorf("category lost through wrapping")
	}
	if errors.Is(New("malformed message", errdefs.ErrInvalidArgument), err) {
		t.Errorf("two sentinels with the same message are one")
	}
}
