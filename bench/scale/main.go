// Command scale measures the server with many streams written at once
// (`make bench-scale`): it runs `messagevault serve` on a new local
// directory under a limit of open files, drives it with `messagevault
// bench` (one producer and one stream per thread), samples the server's
// memory and descriptors from /proc while it works and once its writers
// have gone idle, and prints a table of goal, measured and pass. With
// -tails N it instead opens N event streams (GET .../events) spread over
// 100 streams, publishes to each stream, and checks that every tail gets
// every message, sampling the server's memory meanwhile.
// docs/PERFORMANCE.md records the figures.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	bin := flag.String("bin", "bin/messagevault", "the messagevault binary")
	streams := flag.Int("streams", 10000, "streams, each written by its own producer")
	steps := flag.Int("steps", 20, "batches of 10 messages per producer")
	nofile := flag.Int("nofile", 4096, "the server's limit of open files (RLIMIT_NOFILE)")
	conns := flag.Int("max-connections", 1536, "the server's --max-connections")
	openFiles := flag.Int("max-open-files", 2048, "the server's --max-open-files")
	tails := flag.Int("tails", 0, "instead: open this many event streams and measure the server's memory")
	flag.Parse()
	var err error
	if *tails > 0 {
		err = runTails(context.Background(), *bin, *tails)
	} else {
		err = run(context.Background(), *bin, *streams, *steps, *nofile, *conns, *openFiles)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// sample is what /proc shows of the server at one moment.
type sample struct{ rssKB, fds, streamFiles int }

// password is the admin password of the servers the tool starts.
const password = "scale-bench-password"

// server is a `messagevault serve` process on a new temporary directory.
type server struct {
	dir, data, addr, logPath string
	cmd                      *exec.Cmd
	log                      *os.File
}

// startServer starts bin serve on a new directory and a free loopback
// port, with args; limit, if set, runs with its pid before the server is
// waited for. stop ends it and removes the directory.
func startServer(ctx context.Context, bin string, limit func(pid int) error, args ...string) (*server, error) {
	dir, err := os.MkdirTemp("", "mv-scale-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, data: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "serve.log")}
	if s.addr, err = freeAddr(); err != nil {
		s.stop()
		return nil, err
	}
	if s.log, err = os.Create(s.logPath); err != nil {
		s.stop()
		return nil, err
	}
	s.cmd = exec.CommandContext(ctx, bin, append([]string{"serve", "--data", s.data, "--listen", s.addr}, args...)...)
	s.cmd.Env = append(os.Environ(), "MESSAGEVAULT_ADMIN_PASSWORD="+password)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.stop()
		return nil, fmt.Errorf("start the server: %w", err)
	}
	if limit != nil {
		if err := limit(s.cmd.Process.Pid); err != nil {
			s.stop()
			return nil, err
		}
	}
	if err := waitListening(s.addr, 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stop kills the server and removes its directory.
func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

func run(ctx context.Context, bin string, streams, steps, nofile, conns, openFiles int) error {
	limit := func(pid int) error {
		lim := unix.Rlimit{Cur: uint64(nofile), Max: uint64(nofile)}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			return fmt.Errorf("limit the server's open files: %w", err)
		}
		return nil
	}
	srv, err := startServer(ctx, bin, limit, "--idle-timeout", "5s",
		"--max-connections", strconv.Itoa(conns), "--max-open-files", strconv.Itoa(openFiles))
	if err != nil {
		return err
	}
	defer srv.stop()
	pid, data, addr, logPath := srv.cmd.Process.Pid, srv.data, srv.addr, srv.logPath

	var peak atomic.Pointer[sample]
	peak.Store(&sample{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s := probe(pid, data)
			p := *peak.Load()
			peak.Store(&sample{max(p.rssKB, s.rssKB), max(p.fds, s.fds), max(p.streamFiles, s.streamFiles)})
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	benchCmd := exec.CommandContext(ctx, bin, "bench", "--url", "http://"+addr, "--user", "admin",
		"--threads", strconv.Itoa(streams), "--streams", strconv.Itoa(streams), "--batch", "10",
		"--steps", strconv.Itoa(steps), "--min-size", "100", "--max-size", "100", "--no-verify",
		// The producers share fewer connections than the server serves
		// at once, as many producers behind a few clients do, rather
		// than wait in its listen queue.
		"--connections", strconv.Itoa(conns*2/3))
	benchCmd.Env = append(os.Environ(), "MESSAGEVAULT_PASSWORD="+password)
	out, benchErr := benchCmd.CombinedOutput()
	close(stop)
	<-done
	time.Sleep(20 * time.Second) // the writers' idle timeout (5 s), their closing, and then some
	idle := probe(pid, data)
	hwm := statusKB(pid, "VmHWM")

	logText, _ := os.ReadFile(logPath)
	emfile := strings.Count(string(logText), "too many open files")
	serverErrors := strings.Count(string(logText), "level=ERROR")
	rate, failed := benchSummary(string(out))
	p := peak.Load()

	fmt.Printf("%d streams, one producer each, %d batches of 10 × 100 B; serve --max-connections %d --max-open-files %d under a limit of %d open files\n",
		streams, steps, conns, openFiles, nofile)
	fmt.Printf("bench: %s msgs/s, %d publishes failed (bench exit: %v)\n\n", rate, failed, benchErr)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "goal\twant\tmeasured\tpass")
	row := func(name, want, got string, met bool) {
		pass := "no"
		if met {
			pass = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", name, want, got, pass)
	}
	row("server memory, peak (VmHWM)", "< 512 MB", fmt.Sprintf("%d MB", hwm/1000), hwm < 512_000)
	row("server descriptors, peak", fmt.Sprintf("≤ %d", nofile), fmt.Sprintf("%d (stream files %d)", p.fds, p.streamFiles), p.fds <= nofile && emfile == 0)
	row("  stream files open, peak", fmt.Sprintf("≈ %d (--max-open-files)", openFiles), strconv.Itoa(p.streamFiles), p.streamFiles <= openFiles+openFiles/20)
	row("server errors (\"too many open files\" of them)", "0", fmt.Sprintf("%d (%d)", serverErrors, emfile), serverErrors == 0)
	row("server memory once idle", "< 50 MB", fmt.Sprintf("%d MB, %d descriptors", idle.rssKB/1000, idle.fds), idle.rssKB < 50_000)
	return w.Flush()
}

// freeAddr returns a loopback address with a free port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitListening waits until addr accepts connections.
func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server does not listen on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probe reads the resident memory and descriptors of pid, and counts the
// descriptors open on files in data's stream folders.
func probe(pid int, data string) sample {
	s := sample{rssKB: statusKB(pid, "VmRSS")}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return s
	}
	s.fds = len(fds)
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasPrefix(target, data+string(filepath.Separator)) &&
			strings.Contains(strings.TrimPrefix(target, data+string(filepath.Separator)), string(filepath.Separator)) {
			s.streamFiles++
		}
	}
	return s
}

// statusKB returns a "kB" field of /proc/pid/status.
func statusKB(pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	return 0
}

// benchSummary finds the rate and the failed publishes in bench's output.
func benchSummary(out string) (rate string, failed int) {
	rate = "?"
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "messages/s," {
			rate = f[0]
		}
		if n, ok := strings.CutSuffix(line, " publishes failed"); ok {
			failed, _ = strconv.Atoi(n)
		}
	}
	return rate, failed
}
