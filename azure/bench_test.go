package azure_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/stream"
)

// BenchmarkAzurite measures, against one Azurite in one run, the raw Put
// Page bandwidth (4 MiB pages, one after another, as a single writer does)
// and MessageVault's durable publish throughput (4 producers, batches of
// 1,000 messages of 100 to 1,100 bytes, group commit). Compare their MB/s.
func BenchmarkAzurite(b *testing.B) {
	az := azurite.Start(b)
	ctx := context.Background()
	s := open(b, az, azure.Config{})
	runs := 0

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
