package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// FsyncBaseline measures the disk under dir as a durable publish uses it
// at light load: every interval, one 512-byte write and an fdatasync of
// it, n times. The latencies are the floor under a publish's: a group
// commit does two of them (the records, then the position).
func FsyncBaseline(ctx context.Context, dir string, every time.Duration, n int) (Latency, error) {
	f, err := os.CreateTemp(dir, "fsync-baseline-")
	if err != nil {
		return Latency{}, fmt.Errorf("fsync baseline: %w", err)
	}
	defer os.Remove(filepath.Clean(f.Name()))
	defer f.Close()
	page := make([]byte, 512)
	lats := make([]time.Duration, 0, n)
	next := time.Now()
	for i := range n {
		if err := ctx.Err(); err != nil {
			break
		}
		time.Sleep(time.Until(next))
		next = next.Add(every)
		start := time.Now()
		page[0] = byte(i)
		if _, err := f.WriteAt(page, int64(i%64)*512); err != nil {
			return Latency{}, fmt.Errorf("fsync baseline: %w", err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return Latency{}, fmt.Errorf("fsync baseline: %w", err)
		}
		lats = append(lats, time.Since(start))
	}
	if len(lats) == 0 {
		return Latency{}, ctx.Err()
	}
	slices.Sort(lats)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pct := func(p float64) float64 { return ms(lats[min(int(p*float64(len(lats))), len(lats)-1)]) }
	return Latency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: ms(lats[len(lats)-1])}, nil
}
