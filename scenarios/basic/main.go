// basic: a net/http server whose routes take a known time, for checking the
// tracer's chain against what is injected.
//
//	GET /fast        answers at once
//	GET /sleep/N     sleeps N milliseconds in the handler
//	GET /stream      streams -stream-mb MB in 64 KiB flushed chunks
//	GET /cpu/N       burns N milliseconds of CPU in burnCPU
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	streamMB := flag.Int("stream-mb", 8, "size of /stream in MiB")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/sleep/", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/sleep/"))
		if err != nil {
			http.Error(w, "bad duration", http.StatusBadRequest)
			return
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "slept %d ms\n", ms)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		flusher, _ := w.(http.Flusher)
		for sent := 0; sent < *streamMB<<20; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	mux.HandleFunc("/cpu/", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/cpu/"))
		if err != nil {
			http.Error(w, "bad duration", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", burnCPU(time.Duration(ms)*time.Millisecond))
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("basic listening on %s", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}

// burnCPU spins for d and returns how many rounds it did.
//
//go:noinline
func burnCPU(d time.Duration) uint64 {
	var x uint64 = 1
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for i := 0; i < 10000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	return x
}
