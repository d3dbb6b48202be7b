// slow-reader: a handler writes a large response to a client that stops
// reading (seed, chapter 4.4). The writes wait for send-buffer space.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	sizeMB := flag.Int("size-mb", 32, "size of GET /big in MiB")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		w.Header().Set("Content-Length", strconv.Itoa(*sizeMB<<20))
		for sent := 0; sent < *sizeMB<<20; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
