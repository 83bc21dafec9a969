package load

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// commandTimeout bounds a kill command.
const commandTimeout = 30 * time.Second

// KillPID returns a Trigger that sends SIGKILL to a local process.
func KillPID(pid int) Trigger {
	return func(context.Context, string) error {
		if pid <= 0 {
			return fmt.Errorf("%w: bad pid %d", ErrTrigger, pid)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("%w: kill -9 %d: %w", ErrTrigger, pid, err)
		}
		return nil
	}
}

// NodePlaceholder in a Command is replaced by the target's node id, so
// that a command can name a target Drill chose itself (Target "auto"):
// `docker kill sb-{node}`.
const NodePlaceholder = "{node}"

// Command returns a Trigger that runs a shell command (sh -c) and waits
// for it, for at most 30 s. Every {node} in cmd is replaced by the
// target's node id.
func Command(cmd string) Trigger {
	return func(ctx context.Context, node string) error {
		ctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		cmd := strings.ReplaceAll(cmd, NodePlaceholder, node)
		out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %q: %w: %s", ErrTrigger, cmd, err, out)
		}
		return nil
	}
}
