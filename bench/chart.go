package bench

import (
	"fmt"
	"io"
	"strings"
)

// WriteSVG draws the run's timeline as an SVG chart a browser opens:
// messages per second (blue, left axis) and p99 publish latency in
// milliseconds (red, right axis) for each second of the run.
func WriteSVG(w io.Writer, rep *Report) error {
	const W, H, pad = 900, 420, 60
	tl := rep.Timeline
	maxRate, maxLat := 1.0, 1.0
	for _, s := range tl {
		maxRate = max(maxRate, s.MessagesPerSecond)
		maxLat = max(maxLat, s.P99Ms)
	}
	n := max(len(tl)-1, 1)
	x := func(i int) float64 { return pad + float64(i)*float64(W-2*pad)/float64(n) }
	yRate := func(v float64) float64 { return H - pad - v/maxRate*float64(H-2*pad) }
	yLat := func(v float64) float64 { return H - pad - v/maxLat*float64(H-2*pad) }
	var rate, lat strings.Builder
	for i, s := range tl {
		fmt.Fprintf(&rate, "%.1f,%.1f ", x(i), yRate(s.MessagesPerSecond))
		fmt.Fprintf(&lat, "%.1f,%.1f ", x(i), yLat(s.P99Ms))
	}
	title := fmt.Sprintf("MessageVault bench: %d threads, batches of %d, values %d..%d B: %.0f msgs/s, p99 %.1f ms",
		rep.Threads, rep.Batch, rep.MinSize, rep.MaxSize, rep.MessagesPerSecond, rep.LatencyMs.P99)
	_, err := fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="24" font-size="14">%s</text>
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>
<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>
<text x="%d" y="%d" fill="#1f5fbf">%.0f msgs/s</text>
<text x="%d" y="%d" fill="#c0392b" text-anchor="end">p99 %.1f ms</text>
<text x="%d" y="%d" text-anchor="middle">seconds (0..%d)</text>
<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="%s"/>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="%s"/>
</svg>
`, W, H, pad, escape(title),
		pad, H-pad, W-pad, H-pad, pad, pad, pad, H-pad, W-pad, pad, W-pad, H-pad,
		pad+4, pad-6, maxRate, W-pad-4, pad-6, maxLat, W/2, H-pad+30, len(tl), rate.String(), lat.String())
	return err
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
