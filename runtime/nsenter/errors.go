package nsenter

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// ErrNotRunning: the process is gone, or its pid now belongs to another
// process. Callers branch on it (a health probe of a container that just
// exited is not a failed probe). Requests that cannot be carried out as
// given wrap errdefs.ErrInvalidArgument.
var ErrNotRunning = fmt.Errorf("process is not running: %w", errdefs.ErrFailedPrecondition)
