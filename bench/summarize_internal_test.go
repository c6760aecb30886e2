package bench

import (
	"testing"
	"time"
)

// TestTimelineEndsWithoutAPartialSecond: the run's last second, cut short
// by the end of the run, is drawn at the rate of the part that ran, or
// left out when that part is too short to say anything.
func TestTimelineEndsWithoutAPartialSecond(t *testing.T) {
	samples := []sent{
		{at: 100 * time.Millisecond, latency: time.Millisecond, msgs: 100},
		{at: 1200 * time.Millisecond, latency: time.Millisecond, msgs: 100},
		{at: 2100 * time.Millisecond, latency: time.Millisecond, msgs: 100},
	}
	_, tl := summarize(samples, 2300*time.Millisecond)
	if len(tl) != 2 || tl[1].Second != 1 || tl[1].MessagesPerSecond != 100 {
		t.Fatalf("a run of 2.3 s: %+v, want seconds 0 and 1 only", tl)
	}
	_, tl = summarize(samples, 2800*time.Millisecond)
	if len(tl) != 3 || tl[2].Second != 2 || tl[2].MessagesPerSecond != 125 {
		t.Fatalf("a run of 2.8 s: %+v, want the last second at 100/0.8 = 125 msgs/s", tl)
	}
	_, tl = summarize(samples[:1], 200*time.Millisecond)
	if len(tl) != 1 || tl[0].MessagesPerSecond != 500 {
		t.Fatalf("a run of 0.2 s: %+v, want its one part second at 100/0.2 = 500 msgs/s", tl)
	}
}
