package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
)

// DefaultDataDir is where serve keeps streams when --data is not given.
const DefaultDataDir = "./data"

// ServeCommand runs the server on the embedded default backend.
type ServeCommand struct {
	DataDir string
}

// Command returns the cobra command.
func (c *ServeCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server",
		Long: `Run the MessageVault server.

With no flags it keeps its streams in ./data, creating it if needed. The
directory is locked: a second server on the same directory fails at once.`,
		Example: `  messagevault serve
  messagevault serve --data /var/lib/messagevault`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.Run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&c.DataDir, "data", DefaultDataDir, "data directory of the local backend")
	return cmd
}

// Run opens the data directory and every stream's log, then serves until
// ctx ends (SIGINT or SIGTERM), and closes everything cleanly.
func (c *ServeCommand) Run(ctx context.Context) (err error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	store, err := file.Open(c.DataDir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	names, err := store.Streams(ctx)
	if err != nil {
		return err
	}
	var writers []*stream.Writer
	defer func() {
		for _, w := range writers {
			err = errors.Join(err, w.Close())
		}
	}()
	for _, name := range names {
		w, err := openStream(ctx, store, name)
		if err != nil {
			return err
		}
		writers = append(writers, w)
		log.Info("stream opened", "stream", name, "position", w.Position())
	}
	log.Info("serving", "data", store.Dir(), "streams", len(writers))
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

func openStream(ctx context.Context, store messagevault.Storage, name string) (*stream.Writer, error) {
	pw, err := store.OpenWriter(ctx, name)
	if err != nil {
		return nil, err
	}
	w, err := stream.OpenWriter(ctx, name, pw, stream.WriterConfig{})
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("open stream %q: %w", name, err)
	}
	return w, nil
}
