// basic: a net/http server whose routes take a known time, for checking the
// tracer's chain against what is injected.
//
//	GET /fast        answers at once
//	GET /sleep/N     sleeps N milliseconds in the handler
//	GET /stream      streams -stream-mb MB in 64 KiB flushed chunks
//	GET /cpu/N       burns N milliseconds of CPU in burnCPU
//	GET /json        encodes a catalogue of 10 items as JSON (about 2 KB):
//	                 a handler doing the work most handlers do
package main

import (
	"encoding/json"
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

	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(catalogue(10))
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

type item struct {
	ID       int               `json:"id"`
	Name     string            `json:"name"`
	Price    float64           `json:"price"`
	Tags     []string          `json:"tags"`
	Stock    map[string]int    `json:"stock"`
	Attrs    map[string]string `json:"attrs"`
	Updated  time.Time         `json:"updated"`
	Featured bool              `json:"featured"`
}

// catalogue builds n items afresh, as a handler reading its data would.
func catalogue(n int) []item {
	items := make([]item, n)
	for i := range items {
		items[i] = item{
			ID:       i,
			Name:     fmt.Sprintf("item %d of the catalogue", i),
			Price:    float64(i) * 1.25,
			Tags:     []string{"new", "sale", strconv.Itoa(i % 7)},
			Stock:    map[string]int{"paris": i, "lyon": i * 2, "nice": i % 5},
			Attrs:    map[string]string{"colour": "blue", "size": strconv.Itoa(i % 4)},
			Updated:  time.Unix(1700000000+int64(i), 0).UTC(),
			Featured: i%3 == 0,
		}
	}
	return items
}
