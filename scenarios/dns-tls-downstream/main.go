// dns-tls-downstream: a handler resolves a name through a slow DNS server,
// then makes a TLS call to a downstream (seed, chapter 4.3). Keep-alives are
// off, so every request pays the lookup, the handshake and the call.
//
//	-role server          GET /api: resolve -name via -dns, GET https://<name>:<port>/
//	-role dns             answers A queries with 127.0.0.1 after -delay (UDP)
//	-role tls-downstream  answers over TLS after -delay
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"
)

func main() {
	role := flag.String("role", "server", "server, dns or tls-downstream")
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	dnsAddr := flag.String("dns", "127.0.0.77:53", "DNS server (server role)")
	name := flag.String("name", "downstream.test", "downstream host name (server role)")
	port := flag.Int("downstream-port", 9443, "downstream TLS port (server role)")
	delay := flag.Duration("delay", 100*time.Millisecond, "answer delay (dns and tls-downstream roles)")
	flag.Parse()

	switch *role {
	case "dns":
		serveDNS(*addr, *delay)
	case "tls-downstream":
		serveTLS(*addr, *delay)
	default:
		serveAPI(*addr, *dnsAddr, *name, *port)
	}
}

func serveAPI(addr, dnsAddr, name string, port int) {
	resolver := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", dnsAddr)
		},
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{Resolver: resolver}).DialContext,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true,
	}}
	url := fmt.Sprintf("https://%s:%d/", name, port)
	mux := http.NewServeMux()
	mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(url)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	log.Printf("server listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}

func serveTLS(addr string, delay time.Duration) {
	cert, err := selfSigned()
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		fmt.Fprintln(w, "tls answer")
	})
	srv := &http.Server{Addr: addr, Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	log.Printf("tls-downstream listening on %s", addr)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "downstream.test"},
		DNSNames:     []string{"downstream.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// serveDNS answers every A question with 127.0.0.1 and every other type with
// no answer, each after the delay.
func serveDNS(addr string, delay time.Duration) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("dns listening on %s", addr)
	buf := make([]byte, 512)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		query := append([]byte(nil), buf[:n]...)
		go func() {
			time.Sleep(delay)
			if reply := answer(query); reply != nil {
				pc.WriteTo(reply, peer)
			}
		}()
	}
}

// answer builds the reply to a one-question query.
func answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	// The question: labels up to the zero byte, then type and class.
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4:])
	r := append([]byte(nil), q[:end]...)
	r[2] = 0x81 // response, recursion desired
	r[3] = 0x80 // recursion available, no error
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	if qtype == 1 {
		binary.BigEndian.PutUint16(r[6:], 1)
		// Name pointer to the question, type A, class IN, TTL 0, 4 bytes.
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1)
	}
	return r
}
