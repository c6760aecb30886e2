package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// CursorsCommand manages consumer cursors.
type CursorsCommand struct {
	conn
	stdout   io.Writer
	asJSON   bool
	position int64
	ifMatch  string
}

// Command returns the cobra command and its subcommands.
func (c *CursorsCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cursors",
		Short: "Consumer cursors: durable positions that modules resume from (needs STREAM:read)",
		Long: `Consumer cursors are named positions in a stream, kept in the server's storage
beside the stream, so that a module that consumes the stream resumes where it
stopped and anyone can see how far behind it is (Lag, in bytes). A cursor is
changed by compare-and-swap: "set --if-match ETAG" succeeds only if nobody set
it since that ETag was read.`,
		Example: `  messagevault cursors list orders
  messagevault cursors get orders reports
  messagevault cursors set orders reports --position 1048576
  messagevault cursors set orders reports --position 2097152 --if-match 7d3f0a1c9e2b4d68
  messagevault cursors delete orders reports`,
		Args: cobra.NoArgs,
	}
	show := func(name string, pos, lag int64, etag string) {
		if c.asJSON {
			b, _ := json.Marshal(map[string]any{"Name": name, "Position": pos, "Lag": lag, "ETag": etag})
			fmt.Fprintln(c.stdout, string(b))
			return
		}
		fmt.Fprintf(c.stdout, "%s\t%d\t%d\t%s\n", name, pos, lag, etag)
	}
	list := &cobra.Command{
		Use:   "list STREAM",
		Short: "List a stream's cursors: name, position, lag in bytes, ETag (tab-separated)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := c.client().Cursors(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			for _, cur := range cs {
				show(cur.Name, cur.Position, cur.Lag, cur.ETag)
			}
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get STREAM NAME",
		Short: "Show a cursor: name, position, lag in bytes, ETag",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cur, err := c.client().GetCursor(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			show(cur.Name, cur.Position, cur.Lag, cur.ETag)
			return nil
		},
	}
	set := &cobra.Command{
		Use:   "set STREAM NAME --position N [--if-match ETAG]",
		Short: "Set a cursor to a position (a message's offset, or the stream's position)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("position") || c.position < 0 {
				return usageError("--position: give the position (a message's offset, from 0) to set the cursor to")
			}
			cur, err := c.client().SetCursor(cmd.Context(), args[0], args[1], c.position, c.ifMatch)
			if err != nil {
				return err
			}
			show(cur.Name, cur.Position, 0, cur.ETag)
			return nil
		},
	}
	set.Flags().Int64Var(&c.position, "position", 0, "the position to set the cursor to")
	set.Flags().StringVar(&c.ifMatch, "if-match", "", "set only if the cursor's ETag is still this one")
	del := &cobra.Command{
		Use:   "delete STREAM NAME",
		Short: "Delete a cursor",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.client().DeleteCursor(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted cursor %s of %s\n", args[1], args[0])
			return nil
		},
	}
	for _, sub := range []*cobra.Command{list, get, set, del} {
		c.flags(sub)
		if sub != del {
			sub.Flags().BoolVar(&c.asJSON, "json", false, "print JSON")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}
