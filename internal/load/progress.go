package load

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progressEveryNonTTY is how often a ProgressLine writes a line when its
// output is not a terminal.
const progressEveryNonTTY = 5 * time.Second

// ProgressLine shows Progress as one live line: rewritten in place on a
// terminal, otherwise a line on log every few seconds. sbload and sbctl
// drill show their runs with it.
type ProgressLine struct {
	term, log io.Writer
	tty       bool
	prefix    string

	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// NewProgressLine returns a line drawn on term when tty, else written to
// log, each line starting with prefix.
func NewProgressLine(term, log io.Writer, tty bool, prefix string) *ProgressLine {
	return &ProgressLine{term: term, log: log, tty: tty, prefix: prefix}
}

// Show draws s; it is a Config.Progress.
func (p *ProgressLine) Show(s Progress) {
	line := fmt.Sprintf("%s %-10s %6.1fs conn=%d sent=%d acked=%d delivered=%d errors=%d",
		s.Scenario, s.Phase, s.Elapsed.Seconds(), s.Connected, s.Sent, s.Acked, s.Delivered, s.Errors)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.term, "\r\033[K%s", line)
		p.drawn = true
		return
	}
	if time.Since(p.last) >= progressEveryNonTTY {
		p.last = time.Now()
		fmt.Fprintln(p.log, p.prefix+line)
	}
}

// Finish clears the terminal line, so what follows starts on a clean
// line.
func (p *ProgressLine) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprint(p.term, "\r\033[K")
	}
}
