package main

import "testing"

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkAzurite/PutPage4MiB-2         	      40	  79537860 ns/op	  52.73 MB/s
BenchmarkAzurite/PutPage4MiB#01-2      	      49	  70186327 ns/op	  59.76 MB/s
BenchmarkAzureLatency/Pipelined-2      	     516	   6707119 ns/op	         8.241 commit-ms	     14910 msgs/s	        25.65 p50-ms
PASS
`
	res := parseBench(out)
	if got := res["BenchmarkAzurite/PutPage4MiB"]; len(got) != 2 || got[0]["MB/s"] != 52.73 || got[1]["MB/s"] != 59.76 {
		t.Fatalf("PutPage4MiB: %v", got)
	}
	if got := res["BenchmarkAzureLatency/Pipelined"]; len(got) != 1 || got[0]["msgs/s"] != 14910 || got[0]["commit-ms"] != 8.241 || got[0]["p50-ms"] != 25.65 {
		t.Fatalf("Pipelined: %v", got)
	}
	if len(res) != 2 {
		t.Fatalf("parsed %d benchmarks from %v", len(res), res)
	}
}
