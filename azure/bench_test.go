package azure_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/faultproxy"
	"github.com/messagevault/messagevault/stream"
)

// rounds is how often the Azure benchmarks measure their shapes, one
// after the other: each round measures them side by side, where -count
// would run each shape its count times in a row.
var rounds = flag.Int("azure.rounds", 1, "rounds of the Azure benchmarks' shapes, alternated")

// BenchmarkAzurite measures, against one Azurite in one run, the raw Put
// Page bandwidth (4 MiB pages, one after another, as a single writer does)
// and MessageVault's durable publish throughput (4 producers, batches of
// 1,000 messages of 100 to 1,100 bytes, group commit). Compare their MB/s.
func BenchmarkAzurite(b *testing.B) {
	az := azurite.Start(b)
	ctx := context.Background()
	s := open(b, az, azure.Config{})
	runs := 0

	for range *rounds {
		b.Run("PutPage4MiB", func(b *testing.B) {
			cc := s.Service().NewContainerClient("mv-rawbench")
			if _, err := cc.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
				b.Fatal(err)
			}
			runs++
			pb := cc.NewPageBlobClient(fmt.Sprintf("raw-%d.b7", runs))
			const page = azure.MaxPutPage
			const blobSize = 64 << 30 // page blobs are sparse: only written pages count
			if _, err := pb.Create(ctx, blobSize, nil); err != nil {
				b.Fatal(err)
			}
			data := bytes.Repeat([]byte("0123456789abcdef"), page/16)
			b.SetBytes(page)
			i := 0
			for b.Loop() {
				_, err := pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(data)), blob.HTTPRange{Offset: int64(i) * page % blobSize, Count: page}, &pageblob.UploadPagesOptions{})
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})

		b.Run("Publish", func(b *testing.B) {
			pw, err := s.OpenWriter(ctx, "pubbench")
			if err != nil {
				b.Fatal(err)
			}
			w, err := stream.OpenWriter(ctx, "pubbench", pw, stream.WriterConfig{}) // default grow step
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			batches := make([][]messagevault.Message, 4)
			var size int64
			for p := range batches {
				for i := 0; i < 1000; i++ {
					v := bytes.Repeat([]byte{byte('a' + p)}, 100+(i*37)%1000)
					batches[p] = append(batches[p], messagevault.NewMessage([]byte(fmt.Sprintf("message%d-%d", p, i)), v, 0))
					size += int64(25 + len(batches[p][i].Key) + len(v))
				}
			}
			b.SetBytes(size / 4)
			work := make(chan int)
			var wg sync.WaitGroup
			for p := 0; p < 4; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						if _, err := w.Append(ctx, batches[p]); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for b.Loop() {
				work <- 1
			}
			close(work)
			wg.Wait()
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// timing forwards every request and keeps how long each Put Page of
// records and each position commit took.
type timing struct {
	mu             sync.Mutex
	pages, commits []time.Duration
}

func (t *timing) Do(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	took := time.Since(start)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case isPageWrite(req):
		t.pages = append(t.pages, took)
	case isPositionMetadata(req):
		t.commits = append(t.commits, took)
	}
	return resp, err
}

// medians returns the median Put Page and commit since the last call.
func (t *timing) medians() (page, commit time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	page, commit = medianOf(t.pages), medianOf(t.commits)
	t.pages, t.commits = nil, nil
	return page, commit
}

func medianOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// oneGroupAtATime hides a storage writer's StartCommit, so that the stream
// writer commits one group at a time: the baseline of the pipeline.
type oneGroupAtATime struct{ messagevault.PageWriter }

// BenchmarkAzureLatency measures one stream's publish through the fault
// proxy with 5 ms added to every request, as on Azure across a region:
// one group at a time against the pipelined writer, side by side in one
// process against one Azurite. 4 producers append batches of 100 messages of
// 100 bytes and wait for each answer. It reports msgs/s, the median
// answer in ms and in round trips of the added 5 ms, and the median Put
// Page and position commit as the client saw them (5 ms and Azurite's
// own time).
func BenchmarkAzureLatency(b *testing.B) {
	const rtt = 5 * time.Millisecond
	az := azurite.Start(b)
	ctx := context.Background()
	p, err := faultproxy.Start("http://127.0.0.1:" + az.Port)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	p.Set(faultproxy.Latency, rtt, 0)
	cs := strings.Replace(az.ConnectionString(), "http://127.0.0.1:"+az.Port, p.URL, 1)
	tr := &timing{}
	s, err := azure.Open(cs, azure.Config{Transport: tr})
	if err != nil {
		b.Fatal(err)
	}
	runs := 0
	for range *rounds {
		for _, shape := range []string{"OneGroupAtATime", "Pipelined"} {
			b.Run(shape, func(b *testing.B) {
				runs++
				name := fmt.Sprintf("latency-%d", runs)
				pw, err := s.OpenWriter(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				if shape == "OneGroupAtATime" {
					pw = oneGroupAtATime{pw}
				}
				w, err := stream.OpenWriter(ctx, name, pw, stream.WriterConfig{})
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				tr.medians() // from here on
				msgs := make([]messagevault.Message, 100)
				for i := range msgs {
					msgs[i] = messagevault.NewMessage(nil, bytes.Repeat([]byte{'v'}, 100), 0)
				}
				var (
					mu    sync.Mutex
					waits []time.Duration
					wg    sync.WaitGroup
				)
				work := make(chan int)
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range work {
							start := time.Now()
							if _, err := w.Append(ctx, msgs); err != nil {
								b.Error(err)
							}
							mu.Lock()
							waits = append(waits, time.Since(start))
							mu.Unlock()
						}
					}()
				}
				for b.Loop() {
					work <- 1
				}
				close(work)
				wg.Wait()
				page, commit := tr.medians()
				p50 := medianOf(waits)
				b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(float64(p50)/float64(time.Millisecond), "p50-ms")
				b.ReportMetric(float64(p50)/float64(rtt), "p50-rtts")
				b.ReportMetric(float64(page)/float64(time.Millisecond), "page-ms")
				b.ReportMetric(float64(commit)/float64(time.Millisecond), "commit-ms")
			})
		}
	}
}
