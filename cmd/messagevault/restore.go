package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
)

// RestoreCommand copies a local mirror back into storage.
type RestoreCommand struct {
	stdout, stderr io.Writer
	azure, data    string
}

// Command returns the cobra command.
func (c *RestoreCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore DIR STREAM",
		Short: "Copy a local mirror of a stream back into storage",
		Long: `Copy the stream STREAM of a local mirror (DIR/STREAM/, as "messagevault
mirror" makes it, or a data directory) into storage: an Azure account with
--azure, or a local data directory with --data. Records are copied byte for
byte, so the restored stream has the same positions and ids, and consumers'
positions stay valid.

A stream that exists in the target must be a beginning of the mirror: then
only what it lacks is copied (the command can be interrupted and run again).
A target stream that holds anything else is refused, and nothing is
changed. The copy writes the target stream as its writer, so no server may
write it meanwhile: on Azure it refuses while a server holds the account's
leader lease (stop the servers, or restore into a new account); a local
data directory is locked by its server.`,
		Example: `  messagevault mirror orders ./backup            # the backup, on a schedule
  messagevault restore ./backup orders --azure    # back into the account of $AZURE_STORAGE_CONNECTION_STRING`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return c.Run(cmd, args[0], args[1]) },
	}
	f := cmd.Flags()
	addAzureFlag(f, &c.azure, "restore into Azure")
	f.StringVar(&c.data, "data", "", "restore into this local data directory instead")
	return cmd
}

// Run restores.
func (c *RestoreCommand) Run(cmd *cobra.Command, dir, name string) (err error) {
	ctx := cmd.Context()
	if (c.azure == "") == (c.data == "") {
		return usageError("give where to restore to: --azure or --data")
	}
	name, err = messagevault.NormalizeStreamName(name)
	if err != nil {
		return usageError("%v", err)
	}
	src, err := client.OpenDir(dir, name)
	if err != nil {
		return fmt.Errorf("open the mirror of %s in %s: %w", name, dir, err)
	}
	defer src.Close()
	var store messagevault.Storage
	if c.azure != "" {
		s, err := openAzure("--azure", c.azure)
		if err != nil {
			return err
		}
		// A server that leads this account writes its streams: the
		// copy would fence it. Take the leader lease to be sure none
		// does now, and give it back (a check at the start: a server
		// started during the copy is the operator's to avoid).
		lock, err := s.LeaderLock()
		if err != nil {
			return err
		}
		held, err := lock.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("check the account's leader lease: %w", err)
		}
		if !held {
			return fmt.Errorf("a server leads this account (it holds the leader lease in mv-sys): stop the servers, or restore into another account; nothing was changed")
		}
		if err := lock.Release(ctx); err != nil {
			s.Close()
			return fmt.Errorf("give the leader lease back (it lapses by itself within a minute): %w", err)
		}
		store = s
	} else {
		s, err := file.Open(c.data)
		if err != nil {
			return err
		}
		store = s
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	update, done := progress(c.stderr, "restore "+name)
	pos, err := src.MirrorTo(ctx, store, update)
	done()
	if err != nil && ctx.Err() != nil {
		fmt.Fprintf(c.stdout, "restore of %s interrupted at position %d; run it again to continue\n", name, pos)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "restored %s from %s up to position %d\n", name, dir, pos)
	return nil
}
