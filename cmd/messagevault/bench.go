package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// BenchCommand is the stress tester.
type BenchCommand struct {
	conn
	stdout, stderr io.Writer
	cfg            bench.Config
	data, azureCS  string
	jsonOut, chart string
	cpuProfile     string
	noSequences    bool
	transferV1     bool
	connections    int
	fsyncBaseline  bool
	segmentSize    byteSize
}

// Command returns the cobra command.
func (c *BenchCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Stress-test a server, then verify every message",
		Long: `Publish with --threads producers, each sending --steps batches (or for
--duration) of --batch messages with values of --min-size..--max-size bytes
(keys message{step}-{i}), against a running server (--url) or an in-process one
(--data DIR or --azure). Report messages/s, batches/s, payload MB/s and
publish latency p50/p90/p99/max; then read every stream back straight from
storage and verify every message (a mismatch fails the run, exit 1).`,
		Example: `  messagevault bench --data /tmp/bench --threads 4 --batch 1000 --min-size 100 --max-size 100 --duration 20s
  messagevault bench --url http://127.0.0.1:8001 --steps 200 --json report.json --chart report.svg
  messagevault bench --azure --threads 8 --steps 50`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.Run(cmd) },
	}
	c.flags(cmd)
	f := cmd.Flags()
	f.IntVar(&c.cfg.Threads, "threads", 4, "concurrent producers")
	f.IntVar(&c.cfg.Steps, "steps", 0, "batches per producer (default 100 unless --duration)")
	f.DurationVar(&c.cfg.Duration, "duration", 0, "publish for this long instead of --steps")
	f.IntVar(&c.cfg.Batch, "batch", 100, "messages per batch")
	f.IntVar(&c.cfg.MinSize, "min-size", 117, "smallest value in bytes")
	f.IntVar(&c.cfg.MaxSize, "max-size", 1137, "largest value in bytes")
	f.IntVar(&c.cfg.Streams, "streams", 1, "streams the producers share")
	f.IntVar(&c.cfg.Rate, "rate", 0, "cap on messages per second over all producers (0: as fast as possible)")
	f.BoolVar(&c.cfg.SkipVerify, "no-verify", false, "skip reading every message back")
	f.BoolVar(&c.noSequences, "no-sequences", false, "publish without producer sequences (at-least-once), to measure what exactly-once costs")
	f.BoolVar(&c.fsyncBaseline, "fsync-baseline", false, "with --data: after the run, measure a bare 512-byte write and fdatasync on the same disk at the same pace (--rate, or every 10 ms), and print the publish p99 against it")
	f.IntVar(&c.connections, "connections", 0, "connections to the server that the producers share (0: one per producer); fewer than --threads stands for many producers behind few connections, and keeps them from waiting in the server's listen queue past its --max-connections")
	f.BoolVar(&c.transferV1, "transfer-v1", false, "send v1 transfer bodies (MD5), as the original's clients do, instead of v2 (CRC-32C), to compare")
	f.StringVar(&c.data, "data", "", "run an in-process server on this data directory instead of using --url")
	c.segmentSize = stream.DefaultSegmentSize
	f.Var(&c.segmentSize, "segment-size", "with --data or --azure, the in-process server's segment size (as serve --segment-size)")
	addAzureFlag(f, &c.azureCS, "run an in-process server on Azure")
	f.StringVar(&c.jsonOut, "json", "", "write the report as JSON to this file")
	f.StringVar(&c.chart, "chart", "", "write a chart of throughput and latency over time (SVG) to this file")
	f.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the run (client and in-process server) to this file, for go tool pprof")
	return cmd
}

// Run runs the bench.
func (c *BenchCommand) Run(cmd *cobra.Command) error {
	if c.cfg.Steps > 0 && c.cfg.Duration > 0 {
		return usageError("give --steps or --duration, not both")
	}
	if c.fsyncBaseline && c.data == "" {
		return usageError("--fsync-baseline measures the disk of --data: give --data")
	}
	if c.data != "" && c.azureCS != "" {
		return usageError("give --data or --azure, not both")
	}
	if c.connections < 0 {
		return usageError("--connections must be 0 (one per producer) or more, not %d", c.connections)
	}
	ctx := cmd.Context()
	transport := &http.Transport{MaxIdleConnsPerHost: max(256, c.connections), MaxConnsPerHost: c.connections, TLSClientConfig: c.tls}
	copts := []client.Option{client.WithHTTPClient(&http.Client{Timeout: 2 * time.Minute, Transport: transport}), client.WithGrantReader(azure.GrantReader{})}
	if c.noSequences {
		copts = append(copts, client.WithoutSequences())
	}
	if c.transferV1 {
		copts = append(copts, client.WithTransferV1())
	}
	cl := c.client(copts...)
	var store messagevault.Storage
	var inproc *bench.Server
	switch {
	case c.data != "":
		s, err := file.Open(c.data)
		if err != nil {
			return err
		}
		store = s
	case c.azureCS != "":
		s, err := openAzure("--azure", c.azureCS)
		if err != nil {
			return err
		}
		store = s
	}
	if store != nil {
		if err := stream.CheckSegmentSize(int64(c.segmentSize)); err != nil {
			store.Close()
			return usageError("--segment-size: %v", err)
		}
		srv, err := bench.StartServerWith(store, vault.Config{Writer: stream.WriterConfig{SegmentSize: int64(c.segmentSize)}})
		if err != nil {
			return err
		}
		defer func() { srv.Close(); store.Close() }()
		cl = client.New(srv.URL, srv.User, srv.Password, copts...)
		inproc = srv
	}
	c.cfg.Client = cl
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	rep, err := bench.Run(ctx, c.cfg)
	if rep != nil && rep.Batches == 0 && err != nil {
		return err // nothing was published: a report of zeros says nothing
	}
	if rep != nil && inproc != nil {
		rep.StorageRequestsPer1000Messages = inproc.StorageRequestsPer1000()
	}
	if rep != nil && c.fsyncBaseline && err == nil {
		every := 10 * time.Millisecond
		if c.cfg.Rate > 0 {
			every = time.Second * time.Duration(max(c.cfg.Batch, 1)) / time.Duration(c.cfg.Rate)
		}
		n := int(min(time.Duration(rep.Seconds*float64(time.Second))/every, 3000))
		if base, ferr := bench.FsyncBaseline(ctx, c.data, every, max(n, 100)); ferr != nil {
			err = ferr // the report is still printed
		} else {
			rep.FsyncBaselineMs = &base
		}
	}
	if rep != nil {
		c.print(rep)
		if c.jsonOut != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
		if c.chart != "" {
			f, ferr := os.Create(c.chart)
			if ferr == nil {
				ferr = bench.WriteSVG(f, rep)
				f.Close()
			}
			err = errors.Join(err, ferr)
		}
	}
	return err
}

func (c *BenchCommand) print(r *bench.Report) {
	fmt.Fprintf(c.stdout, "threads %d, batches of %d, values %d..%d bytes, %d stream(s): %s\n", r.Threads, r.Batch, r.MinSize, r.MaxSize, r.Streams, strings.Join(r.StreamNames, " "))
	fmt.Fprintf(c.stdout, "published %s in %s in %.2f s\n", count(r.Messages, "message"), count(r.Batches, "batch"), r.Seconds)
	fmt.Fprintf(c.stdout, "  %.0f messages/s, %.0f batches/s, %.1f MB/s of payload\n", r.MessagesPerSecond, r.BatchesPerSecond, r.PayloadMBPerSecond)
	fmt.Fprintf(c.stdout, "  latency ms: p50 %.2f, p90 %.2f, p99 %.2f, max %.2f\n", r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99, r.LatencyMs.Max)
	if r.Verified > 0 {
		fmt.Fprintf(c.stdout, "verified %s from storage in %.2f s (%.0f messages/s)\n", count(r.Verified, "message"), r.VerifySeconds, r.ReadMessagesPerSecond)
	}
	if b := r.FsyncBaselineMs; b != nil {
		fmt.Fprintf(c.stdout, "bare 512 B write + fdatasync at the same pace, ms: p50 %.2f, p90 %.2f, p99 %.2f, max %.2f\n", b.P50, b.P90, b.P99, b.Max)
		verdict := "not met"
		if r.LatencyMs.P99 <= 2*b.P99+1 {
			verdict = "met"
		}
		fmt.Fprintf(c.stdout, "  publish p99 %.2f ms = %.2f x the fdatasync p99 (goal: at most 2 x it + 1 ms = %.2f ms: %s)\n",
			r.LatencyMs.P99, r.LatencyMs.P99/b.P99, 2*b.P99+1, verdict)
	}
	if r.StorageRequestsPer1000Messages > 0 {
		fmt.Fprintf(c.stdout, "storage: %.2f operations per 1,000 messages published (the server's; on Azure each is a billed request)\n", r.StorageRequestsPer1000Messages)
	}
	if r.Errors > 0 {
		fmt.Fprintf(c.stdout, "%s failed\n", count(r.Errors, "publish"))
	}
}
