// loadgen: the open-loop client of benchmarks/bench_control.py --mixed (standard library only).
//
// Request i is sent at t0 + i/rate whether or not earlier ones finished, each from its own
// goroutine; its latency counts from that scheduled time, so queueing delay is included (no
// coordinated omission). The client reports its own lag (how late it sent), so a saturated
// client cannot pass for a fast server. A fraction --get of the requests are GETs (half a
// container by ID, half a list page of --limit), the rest are POST /v1/containers.
// It prints one JSON object on stdout.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	kind    string
	latency time.Duration
	err     string
}

func pct(values []float64, p float64) float64 {
	if len(values) == 0 {
		return -1
	}
	rank := int(p/100*float64(len(values)) + 0.9999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(values) {
		rank = len(values)
	}
	return values[rank-1]
}

func summary(values []float64) map[string]float64 {
	sort.Float64s(values)
	max := -1.0
	if len(values) > 0 {
		max = values[len(values)-1]
	}
	return map[string]float64{"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99), "max": max}
}

func main() {
	url := flag.String("url", "", "server URL")
	token := flag.String("token", "", "tenant token")
	rate := flag.Float64("rate", 200, "requests per second")
	seconds := flag.Float64("seconds", 60, "duration")
	getShare := flag.Float64("get", 0.75, "fraction of GETs")
	ids := flag.String("ids", "", "comma-separated container IDs for GET by ID")
	limit := flag.Int("limit", 20, "list page size")
	seed := flag.Int64("seed", 1, "random seed")
	flag.Parse()
	idList := strings.Split(*ids, ",")
	transport := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	rng := rand.New(rand.NewSource(*seed))
	count := int(*rate * *seconds)
	results := make([]result, count)
	lags := make([]float64, 0, count)
	var wg sync.WaitGroup
	t0 := time.Now().Add(100 * time.Millisecond)
	for i := 0; i < count; i++ {
		at := t0.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		lags = append(lags, float64(time.Since(at))/1e6)
		var req *http.Request
		var kind string
		roll := rng.Float64()
		switch {
		case roll < *getShare/2:
			kind = "GET one"
			req, _ = http.NewRequest("GET", *url+"/v1/containers/"+idList[rng.Intn(len(idList))], nil)
		case roll < *getShare:
			kind = "GET list"
			req, _ = http.NewRequest("GET", fmt.Sprintf("%s/v1/containers?limit=%d", *url, *limit), nil)
		default:
			kind = "POST"
			body, _ := json.Marshal(map[string]any{
				"image": "busybox", "command": []string{"sleep", "3600"},
				"gpus": 1 + rng.Intn(8), "labels": map[string]string{"bench": "1"},
			})
			req, _ = http.NewRequest("POST", *url+"/v1/containers", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+*token)
		wg.Add(1)
		go func(i int, at time.Time, kind string, req *http.Request) {
			defer wg.Done()
			want := 200
			if kind == "POST" {
				want = 201
			}
			r := result{kind: kind}
			resp, err := client.Do(req)
			if err != nil {
				r.err = "transport: " + strings.SplitN(err.Error(), ": ", 2)[0]
				if strings.Contains(err.Error(), "Timeout") || strings.Contains(err.Error(), "deadline") {
					r.err = "timeout"
				}
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					r.err = fmt.Sprintf("HTTP %d", resp.StatusCode)
				}
			}
			r.latency = time.Since(at)
			results[i] = r
		}(i, at, kind, req)
	}
	wall := time.Since(t0)
	wg.Wait()
	all := []float64{}
	byKind := map[string][]float64{}
	errors := map[string]int{}
	for _, r := range results {
		if r.err != "" {
			errors[r.err]++
			continue
		}
		ms := float64(r.latency) / 1e6
		all = append(all, ms)
		byKind[r.kind] = append(byKind[r.kind], ms)
	}
	kinds := map[string]map[string]float64{}
	for k, v := range byKind {
		s := summary(v)
		s["ok"] = float64(len(v))
		kinds[k] = s
	}
	out := map[string]any{
		"sent": count, "ok": len(all), "errors": errors, "latency_ms": summary(all),
		"by_kind": kinds, "lag_ms": summary(lags), "send_seconds": wall.Seconds(),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
