package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// secretValue resolves a secret given on the command line by reference,
// so that the value itself need not be there (the process list shows
// every argument): "env:NAME" is the environment variable NAME, "@FILE"
// the contents of FILE (trailing white space trimmed); anything else is
// the value itself.
func secretValue(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		s := os.Getenv(name)
		if s == "" {
			return "", fmt.Errorf("the environment variable %s is empty or not set", name)
		}
		return s, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(strings.TrimPrefix(v, "@"))
		if err != nil {
			return "", fmt.Errorf("read the secret: %w", err)
		}
		s := strings.TrimRight(string(b), " \t\r\n")
		if s == "" {
			return "", fmt.Errorf("%s is empty", strings.TrimPrefix(v, "@"))
		}
		return s, nil
	}
	return v, nil
}

// readPassword reads a password from path ("-": from stdin): its first
// line.
func readPassword(path string, stdin io.Reader) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 64<<10))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read the password: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("the password file %s is empty", path)
	}
	return line, nil
}
