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
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
)

func main() {
	runs := flag.Int("runs", 3, "runs of each throughput measurement (the median is reported)")
	seconds := flag.Int("seconds", 8, "seconds per run")
	withAzure := flag.Bool("azure", true, "also measure the Azure goals on Azurite (go test -bench in ./azure; needs `npm ci`)")
	kafkaOnly := flag.Bool("kafka-only", false, "measure only Kafka produce against HTTP publish")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (clients and servers are in this process) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goals:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
	}
	var err error
	if *kafkaOnly {
		var g []goal
		if g, err = kafkaGoals(context.Background(), *runs, time.Duration(*seconds)*time.Second); err == nil {
			err = printGoals(g)
		}
	} else {
		err = run(context.Background(), *runs, time.Duration(*seconds)*time.Second, *withAzure)
	}
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "goals:", err)
		os.Exit(1)
	}
}

type goal struct {
	name, want, got string
	met             bool
}

func run(ctx context.Context, runs int, d time.Duration, withAzure bool) error {
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

	kg, err := kafkaGoals(ctx, runs, d)
	if err != nil {
		return err
	}
	goals = append(goals, kg...)

	if withAzure {
		az, err := azureGoals(ctx, runs)
		if err != nil {
			return err
		}
		goals = append(goals, az...)
	}
	return printGoals(goals)
}

// printGoals prints the table of goals.
func printGoals(goals []goal) error {
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

// kafkaVariant is one way of producing through the Kafka gateway.
type kafkaVariant struct {
	name string
	opts []kgo.Opt
}

// kafkaVariants are franz-go's default producer (idempotent, snappy) and
// the same without compression, as HTTP publishes; then, without
// producer sequences as the HTTP bench, a producer that is not idempotent
// (franz-go then allows one request in flight unless told more).
var kafkaVariants = []kafkaVariant{
	{"franz-go's default producer (idempotent, snappy)", nil},
	{"  idempotent, without compression", []kgo.Opt{kgo.ProducerBatchCompression(kgo.NoCompression())}},
	{"  not idempotent, without compression, 5 requests in flight", []kgo.Opt{kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5)}},
	{"  not idempotent, without compression, 1 request in flight", []kgo.Opt{kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.DisableIdempotentWrite()}},
}

// kafkaGoals measures produce through the Kafka gateway (franz-go, acks
// all) against HTTP publish, the same workload in turn within one run: 4
// producers, batches of 1,000 values of 100 bytes, one stream. The goal
// is franz-go's default producer's rate; the other variants are shown
// beside it.
func kafkaGoals(ctx context.Context, runs int, d time.Duration) ([]goal, error) {
	var httpRates []float64
	kafkaRates := make([][]float64, len(kafkaVariants))
	for range runs {
		cfg := bench.Config{Threads: 4, Batch: 1000, MinSize: 100, MaxSize: 100, Duration: d, SkipVerify: true}
		rep, _, err := publish(ctx, cfg, false, "")
		if err != nil {
			return nil, err
		}
		httpRates = append(httpRates, rep.MessagesPerSecond)
		for i, v := range kafkaVariants {
			rep, err := kafkaPublish(ctx, cfg, v.opts)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			kafkaRates[i] = append(kafkaRates[i], rep.MessagesPerSecond)
		}
	}
	h := median(httpRates)
	var goals []goal
	for i, v := range kafkaVariants {
		k := median(kafkaRates[i])
		if i == 0 {
			goals = append(goals, goal{"Kafka produce against HTTP publish (" + fmt.Sprintf("%.2f M msgs/s", h/1e6) + "), same workload, same run: " + v.name, "≥ 0.70",
				fmt.Sprintf("%.2f (%.2f M msgs/s)", k/h, k/1e6), k/h >= 0.70})
			continue
		}
		goals = append(goals, goal{v.name, "(for comparison)", fmt.Sprintf("%.2f (%.2f M msgs/s)", k/h, k/1e6), true})
	}
	return goals, nil
}

// kafkaPublish runs one bench through the Kafka gateway of an in-process
// server on a new temporary directory, with franz-go's producer (acks
// all) under opts.
func kafkaPublish(ctx context.Context, cfg bench.Config, opts []kgo.Opt) (*bench.Report, error) {
	dir, err := os.MkdirTemp("", "mv-goals-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	store, err := file.Open(dir)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	srv, err := bench.StartServer(store)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	addr, err := srv.ServeKafka()
	if err != nil {
		return nil, err
	}
	opts = append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: srv.User, Pass: srv.Password}.AsMechanism()),
		kgo.RequiredAcks(kgo.AllISRAcks())}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	cfg.Client = client.New(srv.URL, srv.User, srv.Password)
	cfg.Publish = bench.KafkaPublisher(cl)
	return bench.Run(ctx, cfg)
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

// azureGoals runs the Azure benchmarks of package azure on Azurite, runs
// rounds each (each round measures its shapes side by side), and returns the
// goals: publish against raw Put Page bandwidth, and with 5 ms added to
// every request, the pipelined writer against one group at a time.
func azureGoals(ctx context.Context, runs int) ([]goal, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "./azure", "-run", "^$", "-bench", "^(BenchmarkAzurite|BenchmarkAzureLatency)$",
		"-benchtime", "3s", "-azure.rounds", strconv.Itoa(runs))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	res := parseBench(string(out))
	metric := func(name, unit string) []float64 {
		var v []float64
		for _, m := range res[name] {
			v = append(v, m[unit])
		}
		return v
	}
	ratios := func(a, b []float64) []float64 {
		var r []float64
		for i := range min(len(a), len(b)) {
			r = append(r, a[i]/b[i])
		}
		return r
	}
	raw, pub := metric("BenchmarkAzurite/PutPage4MiB", "MB/s"), metric("BenchmarkAzurite/Publish", "MB/s")
	one, piped := metric("BenchmarkAzureLatency/OneGroupAtATime", "msgs/s"), metric("BenchmarkAzureLatency/Pipelined", "msgs/s")
	rtts, page, commit := metric("BenchmarkAzureLatency/Pipelined", "p50-rtts"), metric("BenchmarkAzureLatency/Pipelined", "page-ms"), metric("BenchmarkAzureLatency/Pipelined", "commit-ms")
	p50 := metric("BenchmarkAzureLatency/Pipelined", "p50-ms")
	if len(raw) == 0 || len(pub) == 0 || len(one) == 0 || len(piped) == 0 {
		return nil, fmt.Errorf("the Azure benchmarks printed no results:\n%s", out)
	}
	bw, speedup, acks := median(ratios(pub, raw)), median(ratios(piped, one)), median(rtts)
	perRequest := median(ratios(p50, addUp(page, commit)))
	return []goal{
		{"Azurite: publish ÷ raw Put Page bandwidth, same run", "≥ 0.9", fmt.Sprintf("%.2f (%.1f ÷ %.1f MB/s)", bw, median(pub), median(raw)), bw >= 0.9},
		{"5 ms added: pipelined ÷ one group at a time", "≥ 10×", fmt.Sprintf("%.2f× (%.0f ÷ %.0f msgs/s)", speedup, median(piped), median(one)), speedup >= 10},
		{"5 ms added: median answer, in round trips of 5 ms", "≤ 3", fmt.Sprintf("%.2f (%.1f ms)", acks, median(p50)), acks <= 3},
		{"  the same ÷ (median Put Page + median commit)", "(reported)", fmt.Sprintf("%.2f", perRequest), true},
	}, nil
}

func addUp(a, b []float64) []float64 {
	var s []float64
	for i := range min(len(a), len(b)) {
		s = append(s, a[i]+b[i])
	}
	return s
}

// parseBench reads `go test -bench` output: for each benchmark name
// (without the -GOMAXPROCS suffix, and the #NN of a repeated
// sub-benchmark), one map of unit to value per run.
func parseBench(out string) map[string][]map[string]float64 {
	res := map[string][]map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		if i := strings.LastIndexByte(name, '#'); i > 0 {
			name = name[:i]
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		res[name] = append(res[name], m)
	}
	return res
}
