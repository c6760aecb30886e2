package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// exampleServer runs a MessageVault server in process, on a temporary
// directory, with the user admin/secret. Real code talks to a running
// "messagevault serve" instead.
func exampleServer() (url string, stop func()) {
	dir, _ := os.MkdirTemp("", "mv-example-")
	store, _ := file.Open(dir)
	users, _ := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	users.Add(context.Background(), "admin", "secret", "all:write")
	v := vault.New(store, vault.Config{})
	api := server.New(server.Config{Vault: v, Users: users})
	srv := httptest.NewServer(api)
	return srv.URL, func() { srv.Close(); api.Close(); v.Close(); store.Close(); os.RemoveAll(dir) }
}

func ExampleClient_Publish() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()

	c := client.New(url, "admin", "secret")
	res, err := c.Publish(ctx, "orders", []client.Message{
		{Key: []byte("order-placed"), Value: []byte(`{"id":1}`)},
		{Key: []byte("order-paid"), Value: []byte(`{"id":1}`)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("offsets:", res.Offsets, "position:", res.Position)
	// Output: offsets: [0 45] position: 88
}

func ExampleReader_Messages() {
	url, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c := client.New(url, "admin", "secret")
	c.Publish(ctx, "orders", []client.Message{
		{Key: []byte("order-placed"), Value: []byte("first")},
		{Key: []byte("order-placed"), Value: []byte("second")},
	})

	// The reader goes straight to storage with the server's read grant.
	r, err := c.Reader(ctx, "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%d %s %s (continue from %d)\n", m.Offset, m.Key, m.Value, m.Next)
	}
	// Output:
	// 0 order-placed first (continue from 42)
	// 42 order-placed second (continue from 85)
}

// A consumer of a server on Azure reads the storage itself: it gives the
// client a GrantReader for Azure's grants (the client package does not
// build the Azure SDK in by itself).
func ExampleWithGrantReader() {
	c := client.New("https://messagevault.example.com", "reader", os.Getenv("MESSAGEVAULT_PASSWORD"),
		client.WithGrantReader(azure.GrantReader{}))
	r, err := c.Reader(context.Background(), "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	fmt.Println("reading from storage:", !r.ViaServer)
}

// A projection module: it keeps a count of orders by status, resumes from
// its cursor after a restart, and stops when its context ends.
func ExampleClient_Consume() {
	url, stop := exampleServer()
	defer stop()
	c := client.New(url, "admin", "secret")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Publish(ctx, "orders", []client.Message{
		{Key: []byte("order-placed"), Value: []byte(`{"id":1}`)},
		{Key: []byte("order-placed"), Value: []byte(`{"id":2}`)},
		{Key: []byte("order-paid"), Value: []byte(`{"id":1}`)},
	})

	counts := map[string]int{}
	seen := 0
	err := c.Consume(ctx, "orders", "status-counts", func(ctx context.Context, batch []client.ReadMessage) error {
		for _, m := range batch {
			counts[string(m.Key)]++
			seen++
		}
		if seen == 3 {
			cancel() // a real module runs until it is told to stop
		}
		return nil // the cursor moves past the batch
	})
	fmt.Println(err, counts["order-placed"], counts["order-paid"])
	cur, _ := c.GetCursor(context.Background(), "orders", "status-counts")
	fmt.Println("lag:", cur.Lag)
	// Output:
	// <nil> 2 1
	// lag: 0
}
