package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/messagevault/messagevault/internal/buildinfo"

	"github.com/spf13/cobra"

	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/redact"
)

// Version, if set at build time with -ldflags "-X main.Version=...",
// replaces the module version the Go toolchain stamps into the binary.
var Version = ""

// Main is the command line: it parses the arguments and runs one command.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// NewMain returns a Main on the process's stdin, stdout and stderr.
func NewMain() *Main { return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr} }

// Run runs the command named by args and returns the process exit code:
// 0 on success, 1 when the operation failed, 2 for a usage error. Errors
// are printed as one line on stderr.
func (m *Main) Run(ctx context.Context, args []string) int {
	root := &cobra.Command{
		Use:           "messagevault",
		Short:         "A durable append-only message log on page blobs",
		Long:          "MessageVault keeps per-stream append-only logs in Azure page blobs or a local directory.\nProducers publish over HTTP; consumers read straight from storage.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Read(Version).String(),
	}
	root.SetVersionTemplate("messagevault {{.Version}}\n")
	root.SetOut(m.Stdout)
	root.SetErr(m.Stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: 2, err: fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	root.AddCommand(
		(&ServeCommand{stderr: m.Stderr}).Command(),
		(&PublishCommand{stdout: m.Stdout, stderr: m.Stderr, stdin: m.Stdin}).Command(),
		(&ReadCommand{stdout: m.Stdout, stderr: m.Stderr}).Command(),
		(&ReadCommand{stdout: m.Stdout, stderr: m.Stderr, tail: true}).Command(),
		(&StreamsCommand{stdout: m.Stdout}).Command(),
		(&TrimCommand{stdout: m.Stdout}).Command(),
		(&CursorsCommand{stdout: m.Stdout}).Command(),
		(&GrantsCommand{stdout: m.Stdout}).Command(),
		(&TokensCommand{stdout: m.Stdout}).Command(),
		(&UsersCommand{stdout: m.Stdout, stdin: m.Stdin}).Command(),
		(&MirrorCommand{stdout: m.Stdout, stderr: m.Stderr}).Command(),
		(&RestoreCommand{stdout: m.Stdout, stderr: m.Stderr}).Command(),
		(&VerifyCommand{stdout: m.Stdout, stderr: m.Stderr}).Command(),
		(&BenchCommand{stdout: m.Stdout, stderr: m.Stderr}).Command(),
		(&VersionCommand{stdout: m.Stdout}).Command(),
	)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	typeArgErrors(root)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	// Errors can quote URLs with SAS signatures, or a connection string
	// given where it did not belong: their secrets are never printed.
	fmt.Fprintf(m.Stderr, "messagevault: %s\n", redact.String(err.Error()))
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusUnauthorized && strings.HasPrefix(ce.Message, "credentials required") {
		fmt.Fprintf(m.Stderr, "messagevault: give a user and password with --user and --password, or in %s and %s (or a token in %s)\n", UserEnv, PasswordEnv, TokenEnv)
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// typeArgErrors makes the argument checks of cmd and its subcommands
// return usage errors (exit 2): cobra returns its own (wrong number of
// arguments, unknown command) as plain errors, which would otherwise exit
// 1 like a failed operation. A command with subcommands and no action
// refuses an unknown one instead of printing its help.
func typeArgErrors(cmd *cobra.Command) {
	check := cmd.Args
	if check == nil && cmd.HasSubCommands() {
		check = func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			hint := ""
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				hint = "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return fmt.Errorf("unknown command %q for %q%s", args[0], c.CommandPath(), hint)
		}
	}
	if check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return &exitError{code: 2, err: fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
			}
			return nil
		}
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.RunE = func(c *cobra.Command, args []string) error { return c.Help() }
	}
	for _, sub := range cmd.Commands() {
		typeArgErrors(sub)
	}
}

// noArgs is cobra.NoArgs that does not echo an argument that holds a
// secret: `serve --azure "$CONN"` (a space instead of '=') leaves the
// connection string as an argument.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if redact.LooksSecret(args[0]) || strings.Contains(args[0], "AccountName=") {
		return usageError("unexpected argument, which looks like a connection string (not shown): give it as --azure=<connection string> (with '='), or in $%s with --azure alone", AzureConnectionEnv)
	}
	return usageError("unexpected argument %q for %q", args[0], cmd.CommandPath())
}

// VersionCommand prints the binary's version.
type VersionCommand struct {
	stdout io.Writer
}

// Command returns the cobra command.
func (c *VersionCommand) Command() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(c.stdout, "messagevault %s\n", buildinfo.Read(Version))
			return nil
		},
	}
}
