// mutex-contention: a cache whose lock is held across a slow backend call.
// Concurrent requests queue on the mutex: most of their time is spent
// waiting for it, not in the call.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"sync"
	"time"
)

// Store guards its entries with one mutex, and holds it while it refreshes
// an entry from the backend: the bug.
type Store struct {
	mu      sync.Mutex
	entries map[string]string
	backend time.Duration
}

//go:noinline
func (s *Store) Get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The slow call, under the lock.
	time.Sleep(s.backend)
	v := fmt.Sprintf("%s@%d", key, time.Now().UnixNano())
	s.entries[key] = v
	return v
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	backend := flag.Duration("backend", 20*time.Millisecond, "backend call under the lock")
	flag.Parse()
	store := &Store{entries: map[string]string{}, backend: *backend}
	mux := http.NewServeMux()
	mux.HandleFunc("/item", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, store.Get(r.URL.Query().Get("k")))
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
