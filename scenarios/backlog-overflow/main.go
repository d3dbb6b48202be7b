// backlog-overflow: a listener with a small backlog and an accept loop that
// takes -accept-delay per connection (seed, chapter 3.3). Under many
// concurrent clients the accept queue fills, connections wait in it, and
// the kernel drops handshakes it cannot queue.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// slowListener sleeps before each accept: an accept loop that falls behind.
type slowListener struct {
	net.Listener
	delay time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	time.Sleep(l.delay)
	return l.Listener.Accept()
}

// listen binds with an explicit backlog, which net.Listen does not allow.
func listen(port, backlog int) (net.Listener, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return nil, err
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	return net.FileListener(f)
}

func main() {
	port := flag.Int("port", 8080, "port on 127.0.0.1")
	backlog := flag.Int("backlog", 4, "listen backlog")
	delay := flag.Duration("accept-delay", 25*time.Millisecond, "time the accept loop takes per connection")
	flag.Parse()

	ln, err := listen(*port, *backlog)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	log.Printf("listening on 127.0.0.1:%d, backlog %d, accept every %s", *port, *backlog, *delay)
	srv := &http.Server{Handler: mux}
	srv.SetKeepAlivesEnabled(false)
	log.Fatal(srv.Serve(slowListener{ln, *delay}))
}
