package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/client"
)

// UsersCommand manages users in a local users file or in mv-sys.
type UsersCommand struct {
	url      string
	admin    string
	stdout   io.Writer
	stdin    io.Reader
	pwFile   string
	dataDir  string
	file     string
	azure    string
	password string
}

// Command returns the cobra command with its subcommands.
func (c *UsersCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage users and their claims",
		Long: `Manage users and claims where a server keeps them: <data>/auth.json for the
local backend (--data, default ./data, or --users FILE), or the blob
mv-sys/auth.json with --azure. A running server picks changes up within a
second or so. With --url, the changes go through a server's user routes
instead, as an administrator (all:write) named by --user or $MESSAGEVAULT_USER
with the password in $MESSAGEVAULT_PASSWORD: no storage key is needed.

Claims: all:read, all:write, <stream>:read, <stream>:write, and <prefix>*:read or <prefix>*:write for every stream whose name starts with the prefix (write implies read).`,
		Example: `  messagevault users list
  messagevault users add alice orders:read
  messagevault users add ci --password "$CI_PASSWORD" all:write
  messagevault users grant alice billing:write
  messagevault users revoke alice orders:read
  messagevault users passwd alice
  messagevault users remove alice
  messagevault users list --azure="$AZURE_STORAGE_CONNECTION_STRING"
  messagevault users add bob orders:read --url https://mv.example:8443 --password-file -`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.dataDir, "data", DefaultDataDir, "data directory whose auth.json to edit")
	pf.StringVar(&c.file, "users", "", "users file to edit (instead of <data>/auth.json)")
	addAzureFlag(pf, &c.azure, "edit mv-sys/auth.json of an Azure account")
	pf.StringVar(&c.url, "url", "", "manage the users through this server instead (as --user, default $"+UserEnv+", with the password in $"+PasswordEnv+"; the user needs all:write): no storage key needed")
	pf.StringVar(&c.admin, "user", os.Getenv(UserEnv), "with --url: the administrator to log in as")

	withPassword := func(cc *cobra.Command) *cobra.Command {
		cc.Flags().StringVar(&c.password, "password", "", "the password (default: a random one, printed once); --password-file keeps it off the command line")
		cc.Flags().StringVar(&c.pwFile, "password-file", "", "read the password from the first line of this file (- for stdin)")
		return cc
	}
	cmd.AddCommand(
		&cobra.Command{Use: "list", Short: "List users and their claims", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				if path := c.filePath(); path != "" {
					if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
						return fmt.Errorf("no users file at %s (the server creates it on its first start, and users add creates it too)", path)
					}
				}
				list, err := u.list(cmd.Context())
				if err != nil {
					return err
				}
				for _, p := range list {
					fmt.Fprintf(c.stdout, "%s\t%s\n", p.Name, strings.Join(p.Claims, " "))
				}
				return nil
			}},
		withPassword(&cobra.Command{Use: "add NAME [CLAIM...]", Short: "Add a user", Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				pw, err := c.newPassword()
				if err != nil {
					return err
				}
				if err := u.add(cmd.Context(), args[0], pw, args[1:]); err != nil {
					return err
				}
				c.report("added", args[0], pw)
				return nil
			}}),
		withPassword(&cobra.Command{Use: "passwd NAME", Short: "Set a user's password", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				pw, err := c.newPassword()
				if err != nil {
					return err
				}
				if err := u.setPassword(cmd.Context(), args[0], pw); err != nil {
					return err
				}
				c.report("set the password of", args[0], pw)
				return nil
			}}),
		&cobra.Command{Use: "remove NAME", Short: "Remove a user", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				if err := u.remove(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "removed user %s\n", args[0])
				return nil
			}},
		&cobra.Command{Use: "grant NAME CLAIM...", Short: "Give a user claims", Args: cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				if err := u.claims(cmd.Context(), args[0], args[1:], nil); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "gave %s the claims %s\n", args[0], strings.Join(args[1:], " "))
				return nil
			}},
		&cobra.Command{Use: "revoke NAME CLAIM...", Short: "Take claims from a user", Args: cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				u, err := c.store(cmd.Context())
				if err != nil {
					return err
				}
				defer u.close()
				if err := u.claims(cmd.Context(), args[0], nil, args[1:]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "took the claims %s from %s\n", strings.Join(args[1:], " "), args[0])
				return nil
			}},
	)
	return cmd
}

// userStore is where the users command makes its changes: a users file
// (local or in mv-sys), or a server's user routes.
type userStore interface {
	list(ctx context.Context) ([]auth.Principal, error)
	add(ctx context.Context, name, password string, claims []string) error
	remove(ctx context.Context, name string) error
	setPassword(ctx context.Context, name, password string) error
	claims(ctx context.Context, name string, grant, revoke []string) error
	close() error
}

// store returns the server's user routes with --url, else the users file.
func (c *UsersCommand) store(ctx context.Context) (userStore, error) {
	if c.url != "" {
		if c.azure != "" {
			return nil, usageError("--url and --azure: give one")
		}
		conn := &conn{url: c.url, user: c.admin, retryFor: 0}
		if err := conn.checkURL(); err != nil {
			return nil, err
		}
		return serverUsers{conn.client()}, nil
	}
	u, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	return fileUsers{u}, nil
}

// fileUsers edits a users file.
type fileUsers struct{ u *auth.Users }

func (f fileUsers) list(context.Context) ([]auth.Principal, error) { return f.u.List(), nil }
func (f fileUsers) add(ctx context.Context, name, pw string, claims []string) error {
	return f.u.Add(ctx, name, pw, claims...)
}
func (f fileUsers) remove(ctx context.Context, name string) error { return f.u.Remove(ctx, name) }
func (f fileUsers) setPassword(ctx context.Context, name, pw string) error {
	return f.u.SetPassword(ctx, name, pw)
}
func (f fileUsers) claims(ctx context.Context, name string, grant, revoke []string) error {
	if len(grant) > 0 {
		return f.u.Grant(ctx, name, grant...)
	}
	return f.u.Revoke(ctx, name, revoke...)
}
func (f fileUsers) close() error { return f.u.Close() }

// serverUsers manages users through a server.
type serverUsers struct{ c *client.Client }

func (s serverUsers) list(ctx context.Context) ([]auth.Principal, error) {
	users, err := s.c.Users(ctx)
	out := make([]auth.Principal, len(users))
	for i, u := range users {
		out[i] = auth.Principal{Name: u.Name, Claims: u.Claims}
	}
	return out, err
}
func (s serverUsers) add(ctx context.Context, name, pw string, claims []string) error {
	return s.c.AddUser(ctx, name, pw, claims)
}
func (s serverUsers) remove(ctx context.Context, name string) error { return s.c.RemoveUser(ctx, name) }
func (s serverUsers) setPassword(ctx context.Context, name, pw string) error {
	return s.c.SetPassword(ctx, name, pw)
}
func (s serverUsers) claims(ctx context.Context, name string, grant, revoke []string) error {
	return s.c.ChangeClaims(ctx, name, grant, revoke)
}
func (s serverUsers) close() error { return nil }

func (c *UsersCommand) open(ctx context.Context) (*auth.Users, error) {
	if c.azure != "" {
		s, err := openAzure("--azure", c.azure)
		if err != nil {
			return nil, err
		}
		return auth.Open(ctx, s.Users(), nil)
	}
	if c.file == "" {
		if _, err := os.Stat(c.dataDir); err != nil {
			return nil, fmt.Errorf("data directory %s: %w", c.dataDir, err)
		}
	}
	return auth.Open(ctx, auth.NewFileSource(c.filePath()), nil)
}

// filePath is the local users file the command edits ("" with --url or
// --azure).
func (c *UsersCommand) filePath() string {
	switch {
	case c.url != "" || c.azure != "":
		return ""
	case c.file != "":
		return c.file
	}
	return filepath.Join(c.dataDir, UsersFileName)
}

func (c *UsersCommand) newPassword() (string, error) {
	if c.pwFile != "" {
		if c.password != "" {
			return "", usageError("--password and --password-file: give one")
		}
		pw, err := readPassword(c.pwFile, c.stdin)
		if err != nil {
			return "", err
		}
		c.password = pw // chosen by the operator: not printed
		return pw, nil
	}
	if c.password != "" {
		return c.password, nil
	}
	return auth.RandomPassword(), nil
}

func (c *UsersCommand) report(what, name, pw string) {
	if c.password != "" {
		fmt.Fprintf(c.stdout, "%s user %s\n", what, name)
		return
	}
	fmt.Fprintf(c.stdout, "%s user %s; password (shown once): %s\n", what, name, pw)
}
