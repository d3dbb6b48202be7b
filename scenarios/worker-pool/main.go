// worker-pool: handlers hand their work to a pool fed by a channel, and
// the pool (one worker, 15 ms a job) cannot keep up: handlers wait to send
// their job, then for its result.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

type job struct {
	n    int
	done chan int
}

type pool struct {
	jobs chan job
}

func newPool(workers int, cost time.Duration) *pool {
	p := &pool{jobs: make(chan job)}
	for i := 0; i < workers; i++ {
		go func() {
			for j := range p.jobs {
				time.Sleep(cost)
				j.done <- j.n * 2
			}
		}()
	}
	return p
}

// submit queues a job and waits for its result.
//
//go:noinline
func (p *pool) submit(n int) int {
	j := job{n: n, done: make(chan int, 1)}
	p.jobs <- j
	return <-j.done
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	workers := flag.Int("workers", 1, "workers in the pool")
	cost := flag.Duration("cost", 15*time.Millisecond, "time a worker takes per job")
	flag.Parse()
	p := newPool(*workers, *cost)
	mux := http.NewServeMux()
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, p.submit(len(r.URL.Path)))
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
