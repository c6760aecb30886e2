// Command goals runs the performance goals that `messagevault bench` can
// measure on this machine and prints a table of goal, measured and pass
// (`make bench-goals`). Each goal is a median of a few runs, or a ratio
// measured side by side in one run, because the machine is shared and
// noisy. docs/PERFORMANCE.md explains each goal and records the figures.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
)

func main() {
	runs := flag.Int("runs", 3, "runs of each throughput measurement (the median is reported)")
	seconds := flag.Int("seconds", 8, "seconds per run")
	flag.Parse()
	if err := run(context.Background(), *runs, time.Duration(*seconds)*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "goals:", err)
		os.Exit(1)
	}
}

type goal struct {
	name, want, got string
	met             bool
}

func run(ctx context.Context, runs int, d time.Duration) error {
	var goals []goal
	// HTTP publish: 4 producers, batches of 1,000 values of 100 bytes,
	// durable on the local backend, client and server on this machine.
	var rates, v1Rates, per1000 []float64
	for range runs {
		for _, v1 := range []bool{false, true} {
			rep, reqs, err := publish(ctx, bench.Config{Threads: 4, Batch: 1000, MinSize: 100, MaxSize: 100, Duration: d, SkipVerify: true}, v1, "")
			if err != nil {
				return err
			}
			if v1 {
				v1Rates = append(v1Rates, rep.MessagesPerSecond)
			} else {
				rates, per1000 = append(rates, rep.MessagesPerSecond), append(per1000, reqs)
			}
		}
	}
	rate := median(rates)
	goals = append(goals,
		goal{"HTTP publish, 4 × batches of 1,000 × 100 B, durable", "≥ 1.3 M msgs/s", fmt.Sprintf("%.2f M msgs/s", rate/1e6), rate >= 1.3e6},
		goal{"  the same with v1 bodies (MD5), in the same run", "(for comparison)", fmt.Sprintf("%.2f M msgs/s (v2 is %.2f×)", median(v1Rates)/1e6, rate/median(v1Rates)), true},
		goal{"  storage operations per 1,000 messages", "(reported)", fmt.Sprintf("%.2f", median(per1000)), true},
	)

	// Light load: one message every 10 ms, against a bare 512-byte write
	// and fdatasync at the same pace on the same disk.
	dir, err := os.MkdirTemp("", "mv-goals-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rep, _, err := publish(ctx, bench.Config{Threads: 1, Batch: 1, MinSize: 100, MaxSize: 100, Duration: d, Rate: 100, SkipVerify: true}, false, dir)
	if err != nil {
		return err
	}
	base, err := bench.FsyncBaseline(ctx, dir, 10*time.Millisecond, int(d/(10*time.Millisecond)))
	if err != nil {
		return err
	}
	limit := 2*base.P99 + 1
	goals = append(goals, goal{"publish p99 at 100 msgs/s, against bare fdatasync p99", fmt.Sprintf("≤ 2 × %.2f + 1 = %.2f ms", base.P99, limit),
		fmt.Sprintf("%.2f ms (%.1f×)", rep.LatencyMs.P99, rep.LatencyMs.P99/base.P99), rep.LatencyMs.P99 <= limit})

	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "goal\twant\tmeasured\tpass")
	for _, g := range goals {
		pass := "no"
		if g.met {
			pass = "yes"
		}
		if g.want[0] == '(' {
			pass = ""
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", g.name, g.want, g.got, pass)
	}
	return w.Flush()
}

// publish runs one bench against an in-process server on a new local
// directory (dir, or a temporary one), and returns its report and the
// server's storage operations per 1,000 messages.
func publish(ctx context.Context, cfg bench.Config, v1 bool, dir string) (*bench.Report, float64, error) {
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "mv-goals-"); err != nil {
			return nil, 0, err
		}
		defer os.RemoveAll(dir)
	}
	store, err := file.Open(dir)
	if err != nil {
		return nil, 0, err
	}
	defer store.Close()
	srv, err := bench.StartServer(store)
	if err != nil {
		return nil, 0, err
	}
	defer srv.Close()
	opts := []client.Option{client.WithHTTPClient(&http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}})}
	if v1 {
		opts = append(opts, client.WithTransferV1())
	}
	cfg.Client = client.New(srv.URL, srv.User, srv.Password, opts...)
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	return rep, srv.StorageRequestsPer1000(), nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}
